//! `kb eval`: labelled queries against the daemon's Search, per mode, reporting
//! recall@1, recall@5 and MRR@10. A query counts as found at the rank of the first
//! returned article among its expected ones.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use confidant_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::Client;
use crate::Cli;
use crate::output::{json, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Hybrid,
    Dense,
    Lexical,
}

impl ModeArg {
    pub fn to_pb(self) -> pb::SearchMode {
        match self {
            ModeArg::Hybrid => pb::SearchMode::Hybrid,
            ModeArg::Dense => pb::SearchMode::Dense,
            ModeArg::Lexical => pb::SearchMode::Lexical,
        }
    }
}

#[derive(Args)]
pub struct EvalArgs {
    /// JSONL: {"query": "...", "expected": ["article-id", ...]} per line.
    #[arg(long)]
    queries: PathBuf,
    /// Modes to compare (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<ModeArg>,
    #[arg(long, default_value = "")]
    lang: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub queries: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub mrr_at_10: f64,
}

/// `ranks`: for each query, the 1-based rank of the first expected article, if found.
pub fn score(ranks: &[Option<usize>]) -> Scores {
    let n = ranks.len().max(1) as f64;
    let within = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    Scores {
        queries: ranks.len(),
        recall_at_1: within(1),
        recall_at_5: within(5),
        mrr_at_10: ranks
            .iter()
            .map(|r| match r {
                Some(r) if *r <= 10 => 1.0 / *r as f64,
                _ => 0.0,
            })
            .sum::<f64>()
            / n,
    }
}

fn read_queries(path: &PathBuf) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let query = v["query"].as_str().unwrap_or("").to_string();
        let expected: Vec<String> = match &v["expected"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        if query.is_empty() || expected.is_empty() {
            anyhow::bail!(
                "{}:{}: needs \"query\" and \"expected\"",
                path.display(),
                i + 1
            );
        }
        out.push((query, expected));
    }
    Ok(out)
}

pub async fn run(cli: &Cli, c: &mut Client, tenant: &str, a: &EvalArgs) -> anyhow::Result<()> {
    let queries = read_queries(&a.queries)?;
    let modes = if a.modes.is_empty() {
        vec![ModeArg::Dense, ModeArg::Lexical, ModeArg::Hybrid]
    } else {
        a.modes.clone()
    };
    let bar = ProgressBar::new((queries.len() * modes.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} evaluating [{bar:30}] {pos}/{len}  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    for mode in &modes {
        let mut ranks = Vec::with_capacity(queries.len());
        for (q, expected) in &queries {
            let hits = c
                .search(pb::SearchRequest {
                    tenant: tenant.to_string(),
                    text: q.clone(),
                    lang: a.lang.clone(),
                    channel: String::new(),
                    limit: 10,
                    mode: mode.to_pb() as i32,
                    at_ms: 0,
                })
                .await?
                .into_inner()
                .hits;
            ranks.push(
                hits.iter()
                    .position(|h| expected.contains(&h.article_id))
                    .map(|p| p + 1),
            );
            bar.inc(1);
        }
        results.push((*mode, score(&ranks)));
    }
    bar.finish_and_clear();
    let name = |m: ModeArg| match m {
        ModeArg::Hybrid => "hybrid",
        ModeArg::Dense => "dense",
        ModeArg::Lexical => "lexical",
    };
    if cli.json {
        json(&json!(
            results
                .iter()
                .map(|(m, s)| json!({
                    "mode": name(*m), "queries": s.queries, "recall_at_1": s.recall_at_1,
                    "recall_at_5": s.recall_at_5, "mrr_at_10": s.mrr_at_10,
                }))
                .collect::<Vec<_>>()
        ));
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(m, s)| {
                vec![
                    name(*m).to_string(),
                    s.queries.to_string(),
                    format!("{:.3}", s.recall_at_1),
                    format!("{:.3}", s.recall_at_5),
                    format!("{:.3}", s.mrr_at_10),
                ]
            })
            .collect();
        table(
            &["mode", "queries", "recall@1", "recall@5", "mrr@10"],
            &rows,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_their_definitions() {
        let s = score(&[Some(1), Some(3), None, Some(11)]);
        assert_eq!(s.queries, 4);
        assert_eq!(s.recall_at_1, 0.25);
        assert_eq!(s.recall_at_5, 0.5);
        assert!((s.mrr_at_10 - (1.0 + 1.0 / 3.0) / 4.0).abs() < 1e-12);
    }
}
