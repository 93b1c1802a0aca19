//! Results as a human table and as JSON, with switchboard / floor ratios.
//!
//! A scenario produces [`Section`]s of named rows (one column per system, plus the ratio
//! `switchboard / floor` when both ran) and the raw per-run data; both go into the JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::median;

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A named metric and how to read it from a result.
pub type Metric<T> = (&'static str, fn(&T) -> Option<f64>);

/// One table.
#[derive(Debug, Serialize)]
pub struct Section {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub metric: String,
    pub values: Vec<Option<f64>>,
}

/// A whole scenario's output.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub label: Option<String>,
    pub params: serde_json::Value,
    pub sections: Vec<Section>,
    pub runs: serde_json::Value,
}

/// Compare systems over rounds: `rounds[r][s]` is system `s`'s result in round `r`.
///
/// One section per round when there are several, then the per-metric median over rounds;
/// with two systems a `ratio` column holds `first / second`.
pub fn compare<T>(
    title: &str,
    systems: &[String],
    rounds: &[Vec<Option<T>>],
    metrics: &[Metric<T>],
) -> Vec<Section> {
    let mut out = Vec::new();
    if rounds.len() > 1 {
        for (r, results) in rounds.iter().enumerate() {
            let one =
                |m: &Metric<T>, s: usize| results.get(s).and_then(Option::as_ref).and_then(m.1);
            out.push(section(
                &format!("{title} — round {}", r + 1),
                systems,
                metrics,
                one,
            ));
        }
    }
    let med = |m: &Metric<T>, s: usize| {
        median(
            rounds
                .iter()
                .filter_map(|r| r.get(s).and_then(Option::as_ref).and_then(m.1))
                .collect(),
        )
    };
    let heading = if rounds.len() > 1 {
        format!("{title} — median of {} rounds", rounds.len())
    } else {
        title.to_owned()
    };
    out.push(section(&heading, systems, metrics, med));
    out
}

fn section<T>(
    title: &str,
    systems: &[String],
    metrics: &[Metric<T>],
    value: impl Fn(&Metric<T>, usize) -> Option<f64>,
) -> Section {
    let mut columns = systems.to_vec();
    let with_ratio = systems.len() == 2;
    if with_ratio {
        columns.push("ratio".into());
    }
    let rows = metrics
        .iter()
        .map(|m| {
            let mut values: Vec<Option<f64>> = (0..systems.len()).map(|s| value(m, s)).collect();
            if with_ratio {
                values.push(ratio(values[0], values[1]));
            }
            Row {
                metric: m.0.to_owned(),
                values,
            }
        })
        .collect();
    Section {
        title: title.to_owned(),
        columns,
        rows,
    }
}

/// `a / b` when both are finite and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (a.is_finite() && b.is_finite() && b != 0.0).then(|| a / b)
}

/// A number for a table cell.
pub fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(x) if !x.is_finite() => "-".to_owned(),
        Some(x) if x == x.trunc() => format!("{x:.0}"),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// Render sections as plain-text tables.
pub fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        let name_w = s
            .rows
            .iter()
            .map(|r| r.metric.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        out.push_str(&format!("\n== {} ==\n{:name_w$}", s.title, "metric"));
        for c in &s.columns {
            out.push_str(&format!("  {c:>12}"));
        }
        out.push('\n');
        for r in &s.rows {
            out.push_str(&format!("{:name_w$}", r.metric));
            for v in &r.values {
                out.push_str(&format!("  {:>12}", cell(*v)));
            }
            out.push('\n');
        }
    }
    out
}

/// Print the report (table or JSON) and write the JSON file if asked.
pub fn emit(report: &Report, format: Format, json_file: Option<&PathBuf>) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if let Some(path) = json_file {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    match format {
        Format::Json => println!("{json}"),
        Format::Table => print!("{}", render(&report.sections)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Metric<f64>] = &[("value", |x| Some(*x))];

    #[test]
    fn ratio_column_and_medians() {
        let systems = vec!["switchboard".to_owned(), "floor".to_owned()];
        let rounds = vec![
            vec![Some(8.0), Some(10.0)],
            vec![Some(6.0), None],
            vec![Some(9.0), Some(12.0)],
        ];
        let sections = compare("t", &systems, &rounds, M);
        assert_eq!(sections.len(), 4);
        let last = &sections[3];
        assert_eq!(last.columns, vec!["switchboard", "floor", "ratio"]);
        assert_eq!(
            last.rows[0].values,
            vec![Some(8.0), Some(11.0), Some(8.0 / 11.0)]
        );
        assert_eq!(sections[1].rows[0].values[2], None);
    }

    #[test]
    fn single_system_has_no_ratio() {
        let sections = compare("t", &["floor".to_owned()], &[vec![Some(2.5)]], M);
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].rows[0].values, vec![Some(2.5)]);
        assert!(render(&sections).contains("2.500"));
    }

    #[test]
    fn cells() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(f64::NAN)), "-");
        assert_eq!(cell(Some(12_345.6)), "12346");
        assert_eq!(cell(Some(12.34)), "12.3");
        assert_eq!(cell(Some(3.0)), "3");
        assert_eq!(cell(Some(0.1234)), "0.123");
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }
}
