//! Figures, the table on stdout and the JSON report (machine, settings, every figure with
//! its samples and min/median/max over the repeats).

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

/// One measured quantity, sampled once per repeat.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The scenario (`append`, `revocation`, …).
    pub scenario: String,
    /// What was measured, e.g. `sqlite single writers=64`.
    pub name: String,
    /// `events/s`, `ms`, `MB`, …
    pub unit: String,
    /// One value per repeat.
    pub samples: Vec<f64>,
    /// The target, as text (`>= 20000`), if it has one.
    pub target: Option<String>,
    /// Anything worth knowing to read the number (sizes, backend details).
    pub note: String,
}

impl Figure {
    pub fn new(scenario: &str, name: impl Into<String>, unit: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            name: name.into(),
            unit: unit.to_owned(),
            samples: Vec::new(),
            target: None,
            note: String::new(),
        }
    }

    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn sample(mut self, value: f64) -> Self {
        self.samples.push(value);
        self
    }

    /// (min, median, max) of the samples; zeros when there are none.
    pub fn stats(&self) -> (f64, f64, f64) {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        match (sorted.first(), sorted.last()) {
            (Some(&min), Some(&max)) => {
                let mid = sorted.len() / 2;
                let median = if sorted.len().is_multiple_of(2) {
                    (sorted[mid - 1] + sorted[mid]) / 2.0
                } else {
                    sorted[mid]
                };
                (min, median, max)
            }
            _ => (0.0, 0.0, 0.0),
        }
    }

    fn to_json(&self) -> Value {
        let (min, median, max) = self.stats();
        json!({
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            "samples": self.samples,
            "min": min,
            "median": median,
            "max": max,
            "target": self.target,
            "note": self.note,
        })
    }
}

/// Collects figures across scenarios, merging repeats of the same figure.
#[derive(Debug, Default)]
pub struct Figures {
    list: Vec<Figure>,
}

impl Figures {
    /// Adds the samples of `figure` to the figure of the same scenario and name (or adds
    /// it).
    pub fn add(&mut self, figure: Figure) {
        match self
            .list
            .iter_mut()
            .find(|f| f.scenario == figure.scenario && f.name == figure.name)
        {
            Some(existing) => existing.samples.extend(figure.samples),
            None => self.list.push(figure),
        }
    }

    pub fn extend(&mut self, figures: Vec<Figure>) {
        for figure in figures {
            self.add(figure);
        }
    }

    pub fn all(&self) -> &[Figure] {
        &self.list
    }
}

/// A number for the table: no decimals when large, three significant digits when small.
fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The table printed on stdout.
pub fn table(figures: &[Figure]) -> String {
    let rows: Vec<[String; 7]> = figures
        .iter()
        .map(|f| {
            let (min, median, max) = f.stats();
            [
                f.scenario.clone(),
                f.name.clone(),
                f.unit.clone(),
                human(median),
                format!("{} – {}", human(min), human(max)),
                f.samples.len().to_string(),
                f.target.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let head = [
        "scenario",
        "figure",
        "unit",
        "median",
        "min – max",
        "runs",
        "target",
    ];
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            // Numbers right-aligned, text left-aligned.
            if (3..=5).contains(&i) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
            out.push_str("  ");
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&head.map(str::to_owned));
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// The number of a `Key:   123 kB` line of a /proc file (`key` with its colon).
pub fn proc_kb(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat`, in
/// the kernel's clock ticks of 10 ms.
pub fn process_cpu() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (in parentheses, which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks = |f: Option<&str>| f.and_then(|v| v.parse::<u64>().ok());
    let (user, system) = (ticks(fields.next())?, ticks(fields.next())?);
    Some(std::time::Duration::from_millis((user + system) * 10))
}

/// CPU time the whole machine has been busy (every core, every process: PostgreSQL and
/// NATS too, and anything else running), from `/proc/stat`.
pub fn machine_cpu() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal …, in ticks of 10 ms.
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(std::time::Duration::from_millis(busy * 10))
}

#[test]
fn this_process_has_used_cpu() {
    let spin = std::time::Instant::now();
    while spin.elapsed() < std::time::Duration::from_millis(30) {}
    assert!(process_cpu().is_some_and(|cpu| cpu > std::time::Duration::ZERO));
    assert!(machine_cpu().is_some_and(|cpu| cpu >= process_cpu().unwrap_or_default()));
}

/// What machine the numbers come from.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_mb = |key: &str| proc_kb(&meminfo, key).map(|kb| (kb / 1024.0).round());
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "memory_total_mb": mem_mb("MemTotal:"),
        "memory_available_mb": mem_mb("MemAvailable:"),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned()),
    })
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Writes the JSON report to `path` (creating its directory).
pub fn write_json(path: &Path, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report).context("encoding the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The whole report; `calibration` goes with the machine ([`crate::calibration`]).
pub fn report(figures: &[Figure], settings: Value, load: Value, calibration: Value) -> Value {
    let mut machine = machine();
    machine["calibration"] = calibration;
    json!({
        "tool": "certledger-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "recorded_at": chrono::Utc::now().to_rfc3339(),
        "machine": machine,
        "load": load,
        "settings": settings,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
    })
}

/// p-th percentile (0..=100) of sorted durations in milliseconds.
pub fn percentile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stats_and_merging() {
        let mut figures = Figures::default();
        figures.add(Figure::new("a", "x", "u").sample(3.0));
        figures.add(Figure::new("a", "x", "u").sample(1.0));
        figures.add(Figure::new("a", "x", "u").sample(2.0));
        figures.add(Figure::new("a", "y", "u").sample(5.0));
        assert_eq!(figures.all().len(), 2);
        assert_eq!(figures.all()[0].stats(), (1.0, 2.0, 3.0));
        assert_eq!(figures.all()[1].stats(), (5.0, 5.0, 5.0));
        assert!(table(figures.all()).contains("min – max"));
    }

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 50.0), 50.0);
        assert_eq!(percentile_ms(&d, 99.0), 99.0);
        assert_eq!(percentile_ms(&d, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 99.0), 0.0);
    }
}
