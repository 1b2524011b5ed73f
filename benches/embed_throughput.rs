//! Embedding throughput of Confidant's inference engine, measured the way
//! `shared/bench/st_baseline.py` measures sentence-transformers: the same sentences, sorted
//! by length, in batches of `--batch`, median of `--runs` timed passes after a warm-up.
//! Prints one JSON line. Set RAYON_NUM_THREADS to fix the thread count (run.sh uses 2).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use confidant_inference::{EmbeddingModel, Encoded, InputKind, LoadOptions};

#[derive(Parser)]
struct Args {
    model_dir: PathBuf,
    sentences: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// f32 (default, exact), bf16, f16 or int8.
    #[arg(long)]
    dtype: Option<String>,
    /// Run Candle's own encoder instead of the native CPU one (for comparison).
    #[arg(long)]
    candle: bool,
    /// Also embed every sentence with the f32 encoder and report the lowest and mean
    /// cosine between the two (for --dtype bf16 or int8).
    #[arg(long)]
    cosine_vs_f32: bool,
}

/// Lowest and mean cosine between `model`'s embeddings and f32's, and how many fall
/// below 0.999.
fn cosine_vs_f32(
    model: &EmbeddingModel,
    dir: &std::path::Path,
    sents: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let f32 = EmbeddingModel::load(dir, &LoadOptions::default())?;
    let (mut low, mut sum, mut below) = (1f64, 0f64, 0usize);
    for chunk in sents.chunks(32) {
        let a = model.embed(chunk, InputKind::Query)?;
        let b = f32.embed(chunk, InputKind::Query)?;
        for (x, y) in a.iter().zip(&b) {
            // Both are L2-normalised.
            let c: f64 = x
                .vector
                .iter()
                .zip(&y.vector)
                .map(|(p, q)| f64::from(p * q))
                .sum();
            low = low.min(c);
            sum += c;
            below += usize::from(c < 0.999);
        }
    }
    Ok(serde_json::json!({
        "lowest": (low * 1e6).round() / 1e6,
        "mean": (sum / sents.len().max(1) as f64 * 1e6).round() / 1e6,
        "below_0_999": below,
    }))
}

fn pass(model: &EmbeddingModel, encoded: &[Encoded], batch: usize) -> anyhow::Result<()> {
    for chunk in encoded.chunks(batch) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        model.forward(&refs)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let model = EmbeddingModel::load(
        &a.model_dir,
        &LoadOptions {
            dtype: a.dtype.clone(),
            candle: a.candle,
            ..Default::default()
        },
    )?;
    let text =
        std::fs::read_to_string(&a.sentences).with_context(|| a.sentences.display().to_string())?;
    let sents: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let started = Instant::now();
    // Tokenisation is part of the measured work, as it is in sentence-transformers' encode.
    let tokenize = || -> anyhow::Result<Vec<Encoded>> {
        let mut enc = sents
            .iter()
            .map(|s| model.tokenize(s, InputKind::Query))
            .collect::<Result<Vec<_>, _>>()?;
        enc.sort_by_key(|e| std::cmp::Reverse(e.len()));
        Ok(enc)
    };
    let warm = tokenize()?;
    pass(&model, &warm[..256.min(warm.len())], a.batch)?;
    let mut times = Vec::new();
    for _ in 0..a.runs {
        let t0 = Instant::now();
        let enc = tokenize()?;
        pass(&model, &enc, a.batch)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let tokens: usize = warm.iter().map(Encoded::len).sum();
    let total_s = started.elapsed().as_secs_f64();
    let cosine = if a.cosine_vs_f32 {
        cosine_vs_f32(&model, &a.model_dir, &sents)?
    } else {
        serde_json::Value::Null
    };
    println!(
        "{}",
        serde_json::json!({
            "engine": format!("confidant-{}", model.engine()),
            "dtype": a.dtype.unwrap_or_else(|| "f32".into()),
            "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
            "batch": a.batch, "n": sents.len(), "tokens": tokens,
            "runs_s": times.iter().map(|t| (t * 1e4).round() / 1e4).collect::<Vec<_>>(),
            "sent_per_s_median": ((sents.len() as f64 / median) * 10.0).round() / 10.0,
            "total_s": total_s,
            "cosine_vs_f32": cosine,
        })
    );
    Ok(())
}
