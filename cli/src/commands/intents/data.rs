//! Labelled utterances from CSV or JSONL, checked before any training: malformed lines,
//! empty rows, duplicates (conflicting labels are an error), labels with too few
//! examples. Every problem names its file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub text: String,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

pub struct Columns<'a> {
    pub text: &'a str,
    pub label: &'a str,
}

pub struct Loaded {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    pub problems: Vec<Problem>,
}

impl Loaded {
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    pub fn print_problems(&self) {
        for p in &self.problems {
            let sev = match p.severity {
                Severity::Warning => "warning",
                Severity::Error => "error",
            };
            eprintln!("{}:{}: {sev}: {}", self.path.display(), p.line, p.message);
        }
    }
}

fn is_jsonl(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson" | "json")
    )
}

/// Reads every row; structural problems become errors on their line.
pub fn read(path: &Path, cols: &Columns) -> anyhow::Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut push =
        |line: usize, t: Option<String>, l: Option<String>, problems: &mut Vec<Problem>| {
            let t = t.unwrap_or_default().trim().to_string();
            let l = l.unwrap_or_default().trim().to_string();
            match (t.is_empty(), l.is_empty()) {
                (true, true) => problems.push(Problem {
                    line,
                    severity: Severity::Warning,
                    message: "empty row skipped".into(),
                }),
                (true, false) => problems.push(Problem {
                    line,
                    severity: Severity::Warning,
                    message: format!("empty {} skipped", cols.text),
                }),
                (false, true) => problems.push(Problem {
                    line,
                    severity: Severity::Error,
                    message: format!("{} is empty", cols.label),
                }),
                (false, false) => rows.push(Row {
                    line,
                    text: t,
                    label: l,
                }),
            }
        };
    if is_jsonl(path) {
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw) {
                Ok(obj) => {
                    let get = |k: &str| {
                        obj.get(k).and_then(|v| match v {
                            serde_json::Value::String(s) => Some(s.clone()),
                            serde_json::Value::Null => None,
                            other => Some(other.to_string()),
                        })
                    };
                    push(line, get(cols.text), get(cols.label), &mut problems);
                }
                Err(e) => problems.push(Problem {
                    line,
                    severity: Severity::Error,
                    message: format!("not a JSON object: {e}"),
                }),
            }
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .with_context(|| format!("{}: reading the header line", path.display()))?
            .clone();
        let find = |name: &str| {
            headers.iter().position(|h| h.trim() == name).with_context(|| {
                format!(
                    "{}:1: no column named {name:?} (columns: {}); name it with --text-column / --label-column",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })
        };
        let (ti, li) = (find(cols.text)?, find(cols.label)?);
        for record in reader.records() {
            match record {
                Ok(r) => {
                    let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
                    push(
                        line,
                        r.get(ti).map(str::to_string),
                        r.get(li).map(str::to_string),
                        &mut problems,
                    );
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                    problems.push(Problem {
                        line,
                        severity: Severity::Error,
                        message: format!("malformed CSV: {e}"),
                    });
                }
            }
        }
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        rows,
        problems,
    })
}

fn key(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Training checks: duplicates (the same text twice is dropped with a warning; the same
/// text under two labels is an error, both lines named) and labels with fewer than
/// `min_examples` examples (an error: such a label cannot be learned or calibrated).
/// The out-of-scope label is exempt from the minimum.
pub fn check_for_training(loaded: &mut Loaded, min_examples: usize, oos_label: &str) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut keep = vec![true; loaded.rows.len()];
    for (i, row) in loaded.rows.iter().enumerate() {
        match seen.get(&key(&row.text)) {
            None => {
                seen.insert(key(&row.text), i);
            }
            Some(&first) => {
                let earlier = &loaded.rows[first];
                keep[i] = false;
                if earlier.label == row.label {
                    loaded.problems.push(Problem {
                        line: row.line,
                        severity: Severity::Warning,
                        message: format!("duplicate of line {} skipped", earlier.line),
                    });
                } else {
                    loaded.problems.push(Problem {
                        line: row.line,
                        severity: Severity::Error,
                        message: format!(
                            "same text as line {} but labelled {:?} there and {:?} here",
                            earlier.line, earlier.label, row.label
                        ),
                    });
                }
            }
        }
    }
    let mut i = 0;
    loaded.rows.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for row in &loaded.rows {
        let e = counts.entry(&row.label).or_insert((0, row.line));
        e.0 += 1;
    }
    let mut few = Vec::new();
    for (label, (n, first_line)) in counts {
        if label != oos_label && n < min_examples {
            few.push(Problem {
                line: first_line,
                severity: Severity::Error,
                message: format!(
                    "label {label:?} has {n} example(s), fewer than --min-examples {min_examples}"
                ),
            });
        }
    }
    loaded.problems.extend(few);
    loaded.problems.sort_by_key(|p| p.line);
}

/// Drops every row an error was reported on, and every row of a label that is too
/// small (`--skip-invalid`).
pub fn drop_invalid(loaded: &mut Loaded, min_examples: usize, oos_label: &str) {
    let bad: std::collections::HashSet<usize> = loaded
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.line)
        .collect();
    loaded.rows.retain(|r| !bad.contains(&r.line));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &loaded.rows {
        *counts.entry(r.label.clone()).or_default() += 1;
    }
    loaded.rows.retain(|r| {
        r.label == oos_label || counts.get(&r.label).copied().unwrap_or(0) >= min_examples
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(name: &str, body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        (dir, p)
    }

    const COLS: Columns = Columns {
        text: "text",
        label: "category",
    };

    #[test]
    fn csv_problems_are_reported_with_lines() {
        let (_d, p) = write(
            "t.csv",
            "text,category\nlost my card,lost_card\n,\nmy balance,balance\nLost  my card,balance\n\"broken,line\n",
        );
        let mut l = read(&p, &COLS).unwrap();
        check_for_training(&mut l, 2, "oos");
        let msgs: Vec<String> = l
            .problems
            .iter()
            .map(|p| format!("{}:{}", p.line, p.message))
            .collect();
        assert!(
            msgs.iter().any(|m| m.starts_with("3:empty row")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with("5:same text as line 2")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("malformed CSV")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("\"lost_card\" has 1")),
            "{msgs:?}"
        );
        assert!(l.errors() >= 3);
        drop_invalid(&mut l, 2, "oos");
        assert!(l.rows.iter().all(|r| r.line != 5));
    }

    #[test]
    fn csv_missing_column_names_the_columns() {
        let (_d, p) = write("t.csv", "utterance,intent\nhi,greet\n");
        let err = read(&p, &COLS).err().unwrap().to_string();
        assert!(
            err.contains("\"text\"") && err.contains("utterance, intent"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_rows_duplicates_and_malformed_lines() {
        let (_d, p) = write(
            "t.jsonl",
            "{\"text\":\"hello\",\"category\":\"greet\"}\nnot json\n{\"text\":\"hello\",\"category\":\"greet\"}\n{\"text\":\"你好\",\"category\":\"greet\"}\n",
        );
        let mut l = read(&p, &COLS).unwrap();
        check_for_training(&mut l, 1, "oos");
        assert_eq!(l.rows.len(), 2);
        assert_eq!(l.rows[1].text, "你好");
        assert_eq!(l.errors(), 1);
        assert!(
            l.problems
                .iter()
                .any(|p| p.line == 3 && p.severity == Severity::Warning)
        );
    }
}
