//! How much of the exact answer the embedded index's graph search finds, on a real
//! knowledge base: a copy of a daemon's index (e.g. the 115k-chunk one `benches/load/run.sh`
//! keeps), real utterances embedded by the served model, the filter a bot answer uses, and
//! the candidates it asks for. For each `hnsw_ef`, recall@10 and recall@N against the
//! engine's exact search under the same filter, and the time per search (one caller).
//! Settings that trade recall for speed (`index.hnsw_ef`, `index.quantization`) are
//! measured here before they become defaults.
//!
//!   target/debug/index-recall --index target/load-big/index --model-dir models/all-MiniLM-L6-v2 \
//!       --utterances ../shared/bench/utterances_2000.txt --hnsw-ef 32,64,128 --quantization int8

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use confidant_daemon::index::{
    EmbeddedIndex, Hit, IndexTuning, Quantization, Query, SearchFilter, VectorIndex,
};
use confidant_inference::{EmbeddingModel, InputKind, LoadOptions};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// A daemon's embedded index (`index.path`), copied to `--work` first: the daemon must
    /// not be running on it, and the copy is what a changed setting rebuilds.
    #[arg(long)]
    index: PathBuf,
    #[arg(long, default_value = "target/index-recall")]
    work: PathBuf,
    #[arg(long)]
    model_dir: PathBuf,
    /// model.dtype for the queries' vectors (the daemon's own).
    #[arg(long)]
    dtype: Option<String>,
    /// One query per line; the first `--queries` are used.
    #[arg(long)]
    utterances: PathBuf,
    #[arg(long, default_value_t = 500)]
    queries: usize,
    #[arg(long, default_value = "bench")]
    tenant: String,
    #[arg(long, default_value = "en")]
    lang: String,
    /// Hits asked per search: a bot answer asks for kb.candidates (50).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    hnsw_ef: Vec<usize>,
    /// index.quantization: none, int8, turbo4, turbo2 or binary2 (another kind than the
    /// index holds is built by the optimiser on the first open, with a new graph).
    #[arg(long, default_value = "none")]
    quantization: String,
    /// index.quantization_oversampling
    #[arg(long, default_value_t = 2.0)]
    oversampling: f64,
    /// index.hnsw_m; another value than the index was built with rebuilds the copy's graph.
    #[arg(long, default_value_t = IndexTuning::default().hnsw_m)]
    hnsw_m: usize,
    /// index.hnsw_ef_construct; likewise.
    #[arg(long, default_value_t = IndexTuning::default().hnsw_ef_construct)]
    hnsw_ef_construct: usize,
    /// Untimed searches before each timed pass.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn scores(hits: &[Hit]) -> Vec<f32> {
    hits.iter().map(|h| h.score).collect()
}

/// How many of the exact top `k` the search found. Knowledge bases hold duplicate texts
/// (the same question under several articles), so a hit counts by its score: a twin of
/// an exact hit, with the same score, is as good as the one the exact search listed.
fn found(exact: &[f32], got: &[f32], k: usize) -> (usize, usize) {
    let want = exact.len().min(k);
    let Some(&kth) = exact.get(want.wrapping_sub(1)) else {
        return (0, 0);
    };
    let hit = got[..got.len().min(k)]
        .iter()
        .filter(|&&s| s >= kth - 1e-5)
        .count();
    (hit.min(want), want)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.work.exists() {
        std::fs::remove_dir_all(&a.work)?;
    }
    copy_dir(&a.index, &a.work)?;
    let model = EmbeddingModel::load(
        &a.model_dir,
        &LoadOptions {
            dtype: a.dtype.clone(),
            ..Default::default()
        },
    )?;
    let text = std::fs::read_to_string(&a.utterances)
        .with_context(|| a.utterances.display().to_string())?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(a.queries)
        .collect();
    let mut queries = Vec::with_capacity(lines.len());
    for group in lines.chunks(32) {
        queries.extend(
            model
                .embed(group, InputKind::Query)?
                .into_iter()
                .map(|e| e.vector),
        );
    }
    let tuning = IndexTuning {
        hnsw_ef: a.hnsw_ef.first().copied().unwrap_or(128),
        quantization: Quantization::parse(&a.quantization).with_context(|| {
            format!(
                "--quantization {:?}: expected one of {}",
                a.quantization,
                Quantization::names()
            )
        })?,
        oversampling: a.oversampling,
        hnsw_m: a.hnsw_m,
        hnsw_ef_construct: a.hnsw_ef_construct,
        ..IndexTuning::default()
    };
    let opened = Instant::now();
    let mut index = EmbeddedIndex::open(&a.work, model.dimension(), &tuning)?;
    // A changed setting (int8 copies) is built by the optimiser, as in the daemon.
    while index.optimize()? {}
    let open_s = opened.elapsed().as_secs_f64();
    let (segments, indexed) = index.segments();
    let filter = SearchFilter {
        tenant: a.tenant.clone(),
        lang: Some(a.lang.clone()),
        channel: None,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64,
    };
    index.set_exact(true);
    let truth: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| {
            Ok(scores(&index.search(
                &Query::Dense(q.clone()),
                &filter,
                a.limit,
            )?))
        })
        .collect::<anyhow::Result<_>>()?;
    index.set_exact(false);
    let mut passes = Vec::new();
    for &ef in &a.hnsw_ef {
        index.set_hnsw_ef(ef);
        for q in queries.iter().cycle().take(a.warmup) {
            index.search(&Query::Dense(q.clone()), &filter, a.limit)?;
        }
        let (mut at10, mut at_n, mut want10, mut want_n) = (0, 0, 0, 0);
        let mut ms = Vec::with_capacity(queries.len());
        for (q, t) in queries.iter().zip(&truth) {
            let t0 = Instant::now();
            let got = scores(&index.search(&Query::Dense(q.clone()), &filter, a.limit)?);
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            let (f, w) = found(t, &got, 10);
            (at10, want10) = (at10 + f, want10 + w);
            let (f, w) = found(t, &got, a.limit);
            (at_n, want_n) = (at_n + f, want_n + w);
        }
        ms.sort_by(f64::total_cmp);
        passes.push(json!({
            "hnsw_ef": ef,
            "recall_at_10": at10 as f64 / want10.max(1) as f64,
            format!("recall_at_{}", a.limit): at_n as f64 / want_n.max(1) as f64,
            "mean_ms": ms.iter().sum::<f64>() / ms.len().max(1) as f64,
            "p50_ms": percentile(&ms, 0.5),
            "p99_ms": percentile(&ms, 0.99),
        }));
    }
    println!(
        "{}",
        json!({
            "index": a.index,
            "queries": queries.len(),
            "limit": a.limit,
            "quantization": a.quantization,
            "oversampling": a.oversampling,
            "hnsw_m": a.hnsw_m,
            "hnsw_ef_construct": a.hnsw_ef_construct,
            "open_and_optimise_s": open_s,
            "segments": segments,
            "indexed_vectors": indexed,
            "passes": passes,
        })
    );
    Ok(())
}
