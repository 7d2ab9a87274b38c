//! The summary: rows each part appends to the results file (scenario, measure, value, target,
//! verdict), and the table `report` prints from them at the end.

use std::path::{Path, PathBuf};

/// Summary rows for the final table: scenario, measure, value, target, verdict.
pub struct Rows {
    file: Option<PathBuf>,
    rows: Vec<[String; 5]>,
}

impl Rows {
    pub fn new(file: Option<&Path>) -> Rows {
        Rows {
            file: file.map(Path::to_path_buf),
            rows: Vec::new(),
        }
    }
    pub fn add(
        &mut self,
        scenario: &str,
        measure: &str,
        value: String,
        target: &str,
        verdict: &str,
    ) {
        self.rows.push([
            scenario.into(),
            measure.into(),
            value,
            target.into(),
            verdict.into(),
        ]);
    }
    pub fn save(&self) -> Result<(), String> {
        let Some(f) = &self.file else { return Ok(()) };
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        for r in &self.rows {
            writeln!(out, "{}", r.join("\t")).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A target's verdict.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// KiB as MiB.
pub fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Prints the summary table from the rows the parts wrote to `results`, one scenario a block.
pub fn report(results: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    let header = ["scenario", "measure", "value", "target", "verdict"];
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(5) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, w) in width.iter().enumerate() {
            let c = cells.get(i).copied().unwrap_or("");
            s.push_str(c);
            s.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
        }
        println!("{}", s.trim_end());
    };
    line(&header);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule.iter().map(String::as_str).collect::<Vec<_>>());
    let mut last = "";
    for r in &rows {
        let mut cells = r.clone();
        if cells[0] == last {
            cells[0] = "";
        } else {
            last = r[0];
        }
        line(&cells);
    }
    Ok(())
}
