//! Paraphrase detection by cosine similarity: embeds both questions of every labelled pair
//! (`question_1,question_2,similar` CSV, as in shared/data/covid_qa) and prints the ROC AUC
//! of the cosine against the label, with the embedding rate, as one JSON line per file.
//! An AUC of 1 means every paraphrase pair scores above every non-paraphrase pair.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use confidant_inference::{EmbeddingModel, InputKind, LoadOptions};
use serde_json::json;

#[derive(Parser)]
struct Args {
    model_dir: PathBuf,
    /// CSV files with a header and the columns question_1, question_2, similar (0/1).
    #[arg(required = true)]
    pairs: Vec<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

fn read_pairs(path: &PathBuf) -> anyhow::Result<Vec<(String, String, bool)>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let mut pairs = Vec::new();
    for (n, row) in reader.records().enumerate() {
        // Line numbers as an editor shows them: the header is line 1.
        let line = n + 2;
        let row = row.with_context(|| format!("{}:{line}", path.display()))?;
        let [q1, q2, similar] = [0, 1, 2].map(|i| row.get(i).unwrap_or_default().trim());
        if q1.is_empty() || q2.is_empty() {
            bail!(
                "{}:{line}: expected question_1,question_2,similar",
                path.display()
            );
        }
        let label = match similar {
            "1" => true,
            "0" => false,
            other => bail!(
                "{}:{line}: similar must be 0 or 1, not {other:?}",
                path.display()
            ),
        };
        pairs.push((q1.to_string(), q2.to_string(), label));
    }
    Ok(pairs)
}

/// The q-quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The cosine cut that best separates paraphrases from the rest (highest accuracy), and
/// that accuracy: where a "same question" threshold for this model would sit.
fn best_cut(scored: &[(f32, bool)]) -> (f32, f64) {
    let mut best = (f32::NAN, 0.0);
    for &(cut, _) in scored {
        let right = scored.iter().filter(|(s, p)| (*s >= cut) == *p).count();
        let acc = right as f64 / scored.len() as f64;
        if acc > best.1 {
            best = (cut, acc);
        }
    }
    best
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// ROC AUC as the Mann-Whitney statistic, ties counted half.
fn roc_auc(scored: &[(f32, bool)]) -> f64 {
    let mut v: Vec<(f32, bool)> = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0f64, 0usize);
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * v[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let model = EmbeddingModel::load(&a.model_dir, &LoadOptions::default())?;
    for path in &a.pairs {
        let pairs = read_pairs(path)?;
        let mut texts: Vec<&str> = pairs
            .iter()
            .flat_map(|(x, y, _)| [x.as_str(), y.as_str()])
            .collect();
        texts.sort_unstable();
        texts.dedup();
        let started = Instant::now();
        let mut vectors: HashMap<&str, Vec<f32>> = HashMap::new();
        for chunk in texts.chunks(a.batch) {
            // Both sides are questions a customer asks: embed them as queries.
            for (t, e) in chunk.iter().zip(model.embed(chunk, InputKind::Query)?) {
                vectors.insert(t, e.vector);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let scored: Vec<(f32, bool)> = pairs
            .iter()
            .filter_map(|(x, y, label)| {
                let (u, v) = (vectors.get(x.as_str())?, vectors.get(y.as_str())?);
                Some((u.iter().zip(v).map(|(p, q)| p * q).sum::<f32>(), *label))
            })
            .collect();
        let sorted = |want: bool| {
            let mut v: Vec<f32> = scored.iter().filter(|s| s.1 == want).map(|s| s.0).collect();
            v.sort_by(f32::total_cmp);
            v
        };
        let (para, other) = (sorted(true), sorted(false));
        let spread = |v: &[f32]| {
            json!({"p10": round(quantile(v, 0.1).into(), 3),
                   "median": round(quantile(v, 0.5).into(), 3),
                   "p90": round(quantile(v, 0.9).into(), 3)})
        };
        let (cut, accuracy) = best_cut(&scored);
        println!(
            "{}",
            json!({
                "model": model.manifest().model.name,
                "pairs_file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "pairs": scored.len(),
                "paraphrases": scored.iter().filter(|s| s.1).count(),
                "roc_auc": round(roc_auc(&scored), 4),
                "cosine_paraphrases": spread(&para),
                "cosine_others": spread(&other),
                "best_cut": round(cut.into(), 3),
                "best_cut_accuracy": round(accuracy, 3),
                "texts": texts.len(),
                "texts_per_second": round(texts.len() as f64 / seconds, 1),
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_one_for_perfect_order_half_for_ties_and_zero_reversed() {
        assert_eq!(roc_auc(&[(0.1, false), (0.9, true)]), 1.0);
        assert_eq!(roc_auc(&[(0.5, false), (0.5, true)]), 0.5);
        assert_eq!(roc_auc(&[(0.9, false), (0.1, true)]), 0.0);
        let mixed = [(0.2, false), (0.4, true), (0.6, false), (0.8, true)];
        assert_eq!(roc_auc(&mixed), 0.75);
    }

    #[test]
    fn the_best_cut_separates_and_quantiles_pick_by_rank() {
        let scored = [(0.2, false), (0.5, false), (0.7, true), (0.9, true)];
        assert_eq!(best_cut(&scored), (0.7, 1.0));
        assert_eq!(quantile(&[0.1, 0.2, 0.3], 0.5), 0.2);
        assert_eq!(quantile(&[0.1, 0.2, 0.3], 1.0), 0.3);
    }
}
