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
    /// f32 (default, exact), bf16 or f16.
    #[arg(long)]
    dtype: Option<String>,
    /// Run Candle's own encoder instead of the native CPU one (for comparison).
    #[arg(long)]
    candle: bool,
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
    println!(
        "{}",
        serde_json::json!({
            "engine": format!("confidant-{}", model.engine()),
            "dtype": a.dtype.unwrap_or_else(|| "f32".into()),
            "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
            "batch": a.batch, "n": sents.len(), "tokens": tokens,
            "runs_s": times.iter().map(|t| (t * 1e4).round() / 1e4).collect::<Vec<_>>(),
            "sent_per_s_median": ((sents.len() as f64 / median) * 10.0).round() / 10.0,
            "total_s": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
