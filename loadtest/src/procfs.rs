//! CPU time and resident memory of server processes, read from `/proc`.

use std::io;
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// Clock ticks per second for `/proc/PID/stat` (from `getconf CLK_TCK`, else 100).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` in ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| io::Error::other("bad /proc stat"))?;
    Ok(ticks as f64 / clk_tck() as f64)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_rss_kib(&status).ok_or_else(|| io::Error::other("no VmRSS"))
}

/// Summed CPU seconds of several processes.
pub fn cpu_total(pids: &[u32]) -> Result<f64> {
    pids.iter().try_fold(0.0, |acc, &p| {
        Ok(acc + cpu_seconds(p).with_context(|| format!("pid {p}"))?)
    })
}

/// Summed RSS of several processes, KiB.
pub fn rss_total(pids: &[u32]) -> Result<u64> {
    pids.iter().try_fold(0, |acc, &p| {
        Ok(acc + rss_kib(p).with_context(|| format!("pid {p}"))?)
    })
}

/// Fail early if a pid given on the command line is not a live process.
pub fn check_pids(pids: &[u32]) -> Result<()> {
    cpu_total(pids).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_comm() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 9 1 2";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_rss() {
        let status = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(2048));
        assert_eq!(parse_status_rss_kib("Name: x"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(rss_kib(me).unwrap() > 0);
        assert!(check_pids(&[me]).is_ok());
    }
}
