//! Records the commit the binary is built from as `SWITCHBOARD_COMMIT` (for the
//! `switchboard_build_info` metric): `BUILD_COMMIT` when the build sets it (a container build
//! without `.git`), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    let commit = std::env::var("BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SWITCHBOARD_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let dir = git(&["rev-parse", "--git-dir"])?;
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        println!("cargo:rerun-if-changed={dir}/{watched}");
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let commit: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    (!commit.is_empty()).then_some(commit)
}
