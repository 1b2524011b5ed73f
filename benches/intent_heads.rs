//! Head-only sweeps for intent detection: embeds a training and a test CSV once (cached
//! beside them as raw f32), then trains one classifier per configuration on the cached
//! vectors with the same code as `confidantctl intents train` and prints one JSON line per
//! configuration: held-out figures of each head, the lexical weight chosen, and closed-set
//! accuracy on the test file. Minutes per sweep instead of minutes per configuration.
//!
//!   target/debug/intent-heads --model-dir models/all-MiniLM-L6-v2 \
//!       --train target/bench-intents/train.csv --test target/bench-intents/test.csv \
//!       --config vectors-only --config default --config epochs=20,min-df=1

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use confidant_inference::classifier::{self, EncoderRef, Example, LexicalOptions, TrainOptions};
use confidant_inference::{EmbeddingModel, InputKind, LoadOptions};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model_dir: PathBuf,
    #[arg(long)]
    train: PathBuf,
    #[arg(long)]
    test: PathBuf,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "category")]
    label_column: String,
    /// `vectors-only`, `default`, or comma-separated lexical options
    /// (min-df=N, epochs=N, lr=X, l2=X); repeatable.
    #[arg(long, default_value = "default")]
    config: Vec<String>,
    /// Serve the first fit (faster sweeps; the figures then describe 90% of the data).
    #[arg(long)]
    no_refit: bool,
}

fn read(path: &Path, text: &str, label: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let headers = r.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name}", path.display()))
    };
    let (ti, li) = (col(text)?, col(label)?);
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for row in r.records() {
        let row = row?;
        texts.push(row.get(ti).unwrap_or_default().to_string());
        labels.push(row.get(li).unwrap_or_default().to_string());
    }
    Ok((texts, labels))
}

fn vectors(
    model: &EmbeddingModel,
    texts: &[String],
    cache: &Path,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let dim = model.dimension();
    if let Ok(bytes) = std::fs::read(cache)
        && bytes.len() == texts.len() * dim * 4
    {
        let flat: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        return Ok(flat.chunks(dim).map(<[f32]>::to_vec).collect());
    }
    let mut out = Vec::with_capacity(texts.len());
    for group in texts.chunks(64) {
        let refs: Vec<&str> = group.iter().map(String::as_str).collect();
        out.extend(
            model
                .embed(&refs, InputKind::Query)?
                .into_iter()
                .map(|e| e.vector),
        );
    }
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(cache, bytes).with_context(|| format!("{}", cache.display()))?;
    Ok(out)
}

fn options(config: &str) -> anyhow::Result<Option<LexicalOptions>> {
    match config {
        "vectors-only" => return Ok(None),
        "default" => return Ok(Some(LexicalOptions::default())),
        _ => {}
    }
    let mut o = LexicalOptions::default();
    for kv in config.split(',') {
        let (k, v) = kv.split_once('=').context("expected key=value")?;
        match k {
            "min-df" => o.min_df = v.parse()?,
            "epochs" => o.epochs = v.parse()?,
            "lr" => o.learning_rate = v.parse()?,
            "l2" => o.l2 = v.parse()?,
            _ => bail!("unknown lexical option {k}"),
        }
    }
    Ok(Some(o))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = EmbeddingModel::load(&args.model_dir, &LoadOptions::default())?;
    let (train_texts, train_labels) = read(&args.train, &args.text_column, &args.label_column)?;
    let (test_texts, test_labels) = read(&args.test, &args.text_column, &args.label_column)?;
    let name = model.manifest().model.name.clone();
    let cache = |p: &Path| p.with_extension(format!("{name}.f32"));
    let train_vectors = vectors(&model, &train_texts, &cache(&args.train))?;
    let test_vectors = vectors(&model, &test_texts, &cache(&args.test))?;
    let examples: Vec<Example> = train_texts
        .iter()
        .zip(train_vectors)
        .zip(&train_labels)
        .map(|((t, v), l)| Example {
            text: t.clone(),
            vector: v,
            label: l.clone(),
        })
        .collect();
    let encoder = EncoderRef {
        name: name.clone(),
        fingerprint: model.manifest().fingerprint(),
        dimension: model.dimension(),
    };
    let test_refs: Vec<&str> = test_texts.iter().map(String::as_str).collect();
    for config in &args.config {
        let opts = TrainOptions {
            lexical: options(config)?,
            refit: !args.no_refit,
            ..Default::default()
        };
        let started = Instant::now();
        let c = classifier::train(&examples, encoder.clone(), &opts, &mut |_| {})?;
        let seconds = started.elapsed().as_secs_f64();
        let predictions = c.predict(&test_refs, &test_vectors, 1)?;
        let (mut right, mut total) = (0usize, 0usize);
        for (p, truth) in predictions.iter().zip(&test_labels) {
            if truth == &opts.oos_label {
                continue;
            }
            total += 1;
            right += usize::from(p.top.first().is_some_and(|t| &t.0 == truth));
        }
        let m = c.metrics().context("no metrics")?;
        println!(
            "{}",
            json!({
                "config": config,
                "head_seconds": seconds,
                "held_out_vector_head": m.vector_head_accuracy,
                "held_out_lexical_head": m.lexical_head_accuracy,
                "lexical_weight": m.lexical_weight,
                "held_out_closed_set": m.holdout.closed_set_accuracy,
                "test_closed_set": right as f64 / total.max(1) as f64,
                "test_examples": total,
            })
        );
    }
    Ok(())
}
