//! The embedded index at scale: N chunks of D dimensions written through the daemon's own
//! `EmbeddedIndex` (the same points, payload, payload indexes and filters as a knowledge
//! base import), then searched the way the bot and assist search it. Prints one JSON line:
//! ingest rate, the HNSW build, search p50/p99 with only the tenant filter and with the
//! language, channel and validity filters too, recall@10 of each against exact search over
//! the same filter, the process's peak RSS and the index's size on disk.
//!
//! The vectors are synthetic (no registry carries a million real embeddings, and encoding a
//! million texts here would take days): unit vectors drawn around a few thousand random
//! centres, so that neighbourhoods are crowded as they are in a knowledge base of
//! paraphrases, queries drawn the same way and never indexed.
//!
//!   target/release/index-scale --points 1000000 --dir target/index-scale

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Parser;
use confidant_daemon::index::{
    ChunkKind, EmbeddedIndex, IndexTuning, Point, Quantization, Query, SearchFilter, SparseVector,
    VALID_FROM_OPEN, VALID_UNTIL_OPEN, VectorIndex,
};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Chunks to index.
    #[arg(long, default_value_t = 1_000_000)]
    points: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Chunks per article (question variants and passages).
    #[arg(long, default_value_t = 5)]
    chunks_per_article: usize,
    /// Centres the vectors are drawn around.
    #[arg(long, default_value_t = 5000)]
    clusters: usize,
    /// Spread around a centre: the noise vector's norm relative to the centre's.
    #[arg(long, default_value_t = 0.8)]
    spread: f32,
    /// Queries per search mode.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Where the index is written; emptied first.
    #[arg(long, default_value = "target/index-scale")]
    dir: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Search an index an earlier run with the same arguments built, instead of building
    /// it again (the HNSW build of a million points takes most of an hour on 2 cores).
    #[arg(long)]
    reuse: bool,
    /// `hnsw_ef` values to search with, each over the same queries (index.hnsw_ef).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    hnsw_ef: Vec<usize>,
    /// Untimed searches before each timed pass: the first pass after a build or an open
    /// otherwise pays for faulting the index's pages in (50 were not enough at 100k).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// index.hnsw_m
    #[arg(long, default_value_t = 16)]
    hnsw_m: usize,
    /// index.hnsw_ef_construct
    #[arg(long, default_value_t = 100)]
    ef_construct: usize,
    /// index.quantization: none or int8.
    #[arg(long, default_value = "none")]
    quantization: String,
    /// index.quantization_oversampling
    #[arg(long, default_value_t = 2.0)]
    oversampling: f64,
    /// index.acorn: true or false.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    acorn: bool,
    /// index.indexing_threshold_kb (0: the engine's default).
    #[arg(long, default_value_t = 0)]
    indexing_threshold_kb: usize,
    /// index.max_segment_mb (0: the engine's default).
    #[arg(long, default_value_t = 0)]
    max_segment_mb: usize,
    /// index.segments (0: the engine's default).
    #[arg(long, default_value_t = 0)]
    segments: usize,
}

/// SplitMix64 and Box-Muller: reproducible without another dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn normalise(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
}

struct Generator {
    rng: Rng,
    centres: Vec<Vec<f32>>,
    dim: usize,
    spread: f32,
}

impl Generator {
    fn new(args: &Args) -> Self {
        let mut rng = Rng(args.seed);
        let centres = (0..args.clusters.max(1))
            .map(|_| {
                let mut c: Vec<f32> = (0..args.dim).map(|_| rng.gaussian()).collect();
                normalise(&mut c);
                c
            })
            .collect();
        Self {
            rng,
            centres,
            dim: args.dim,
            spread: args.spread,
        }
    }

    fn vector(&mut self) -> Vec<f32> {
        let c = (self.rng.next_u64() % self.centres.len() as u64) as usize;
        let scale = self.spread / (self.dim as f32).sqrt();
        let mut v: Vec<f32> = (0..self.dim)
            .map(|i| self.centres[c][i] + self.rng.gaussian() * scale)
            .collect();
        normalise(&mut v);
        v
    }
}

/// What the filters of a search match, mirrored here for the exact search.
#[derive(Clone, Copy)]
struct Meta {
    zh: bool,
    web_only: bool,
    expired: bool,
}

impl Meta {
    fn of_article(a: usize) -> Self {
        Self {
            zh: a % 2 == 1,
            web_only: a.is_multiple_of(3),
            expired: a % 10 == 9,
        }
    }
    /// Language zh, channel "phone" (articles without channels are on every channel), valid now.
    fn matches_narrow(self) -> bool {
        self.zh && !self.web_only && !self.expired
    }
}

const TENANT: &str = "bank";
const NOW_MS: i64 = 1_780_000_000_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn kib_from_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Exact top-k by cosine (the vectors are unit length) among the rows `keep` admits.
fn exact_top(
    data: &Tensor,
    queries: &Tensor,
    k: usize,
    keep: &dyn Fn(usize) -> bool,
) -> anyhow::Result<Vec<Vec<usize>>> {
    let (n, _) = data.dims2()?;
    let q = queries.dims2()?.0;
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::new(); q];
    let block = 50_000;
    for start in (0..n).step_by(block) {
        let len = block.min(n - start);
        let scores: Vec<Vec<f32>> = queries
            .matmul(&data.narrow(0, start, len)?.t()?)?
            .to_vec2()?;
        for (qi, row) in scores.iter().enumerate() {
            let b = &mut best[qi];
            for (j, &s) in row.iter().enumerate() {
                let chunk = start + j;
                if !keep(chunk) {
                    continue;
                }
                if b.len() < k || s > b[b.len() - 1].0 {
                    b.push((s, chunk));
                    b.sort_by(|x, y| y.0.total_cmp(&x.0));
                    b.truncate(k);
                }
            }
        }
    }
    Ok(best
        .into_iter()
        .map(|b| b.into_iter().map(|(_, c)| c).collect())
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let per = args.chunks_per_article.max(1);
    let articles = args.points.div_ceil(per);
    if args.dir.exists() && !args.reuse {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("emptying {:?}", args.dir))?;
    }
    let opened = Instant::now();
    let tuning = IndexTuning {
        hnsw_ef: args.hnsw_ef.first().copied().unwrap_or(128),
        hnsw_m: args.hnsw_m,
        hnsw_ef_construct: args.ef_construct,
        quantization: match args.quantization.as_str() {
            "none" => Quantization::None,
            "int8" => Quantization::Int8,
            other => anyhow::bail!("--quantization {other:?}: expected none or int8"),
        },
        oversampling: args.oversampling,
        acorn: args.acorn,
        max_segment_mb: args.max_segment_mb,
        segments: args.segments,
        indexing_threshold_kb: args.indexing_threshold_kb,
    };
    let mut index = EmbeddedIndex::open(&args.dir, args.dim, &tuning)?;
    // The exact search regenerates the same vectors later, so that the RSS measured after
    // the build is the index's, not this program's copy of the data.
    let mut generator = Generator::new(&args);
    let mut terms = Rng(args.seed ^ 0x7E45);
    let mut chunk_meta: Vec<Meta> = Vec::with_capacity(args.points);
    let open_s = opened.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut written = 0usize;
    if args.reuse {
        for a in 0..articles {
            let n = per.min(args.points - written);
            chunk_meta.extend(std::iter::repeat_n(Meta::of_article(a), n));
            written += n;
        }
    }
    for a in (0..articles).filter(|_| !args.reuse) {
        let meta = Meta::of_article(a);
        let n = per.min(args.points - written);
        let article_id = format!("article-{a}");
        let points: Vec<Point> = (0..n)
            .map(|c| {
                let dense = generator.vector();
                chunk_meta.push(meta);
                // A BM25 vector of the size a short question has.
                let mut indices: Vec<u32> =
                    (0..8).map(|_| (terms.next_u64() % 30_000) as u32).collect();
                indices.sort_unstable();
                indices.dedup();
                let values = vec![1.0; indices.len()];
                Point {
                    tenant: TENANT.into(),
                    article_id: article_id.clone(),
                    version: 1,
                    chunk: c as u32,
                    chunks: n as u32,
                    kind: if c == 0 {
                        ChunkKind::Question
                    } else {
                        ChunkKind::Passage
                    },
                    lang: if meta.zh { "zh" } else { "en" }.into(),
                    channels: if meta.web_only {
                        vec!["web".into()]
                    } else {
                        Vec::new()
                    },
                    valid_from: VALID_FROM_OPEN,
                    valid_until: if meta.expired {
                        NOW_MS - 1
                    } else {
                        VALID_UNTIL_OPEN
                    },
                    dense,
                    sparse: SparseVector { indices, values },
                }
            })
            .collect();
        index.replace_article(TENANT, &article_id, 1, points)?;
        written += n;
        if a % 20_000 == 19_999 {
            index.flush()?;
            eprintln!(
                "{written} chunks written, {:.0}/s",
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    index.flush()?;
    let ingest_s = started.elapsed().as_secs_f64();
    eprintln!("ingest: {written} chunks in {ingest_s:.1} s; building HNSW");

    let started = Instant::now();
    let mut passes = 0;
    while index.optimize()? {
        passes += 1;
    }
    index.flush()?;
    let optimize_s = started.elapsed().as_secs_f64();
    eprintln!("optimize: {passes} passes in {optimize_s:.1} s");
    let count = index.count(Some(TENANT))?;
    let (segments, indexed_vectors) = index.segments();
    let index_rss_mib = kib_from_status("VmRSS:") / 1024;

    let mut regenerate = Generator::new(&args);
    let flat: Vec<f32> = (0..written).flat_map(|_| regenerate.vector()).collect();

    let mut qgen = Generator::new(&args);
    qgen.rng = Rng(args.seed ^ 0x5EED);
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| qgen.vector()).collect();
    let data = Tensor::from_vec(flat, (written, args.dim), &Device::Cpu)?;
    let qt = Tensor::from_vec(
        queries.iter().flatten().copied().collect::<Vec<f32>>(),
        (queries.len(), args.dim),
        &Device::Cpu,
    )?;
    let chunk_of = |hit: &confidant_daemon::index::Hit| -> Option<usize> {
        let a: usize = hit.article_id.strip_prefix("article-")?.parse().ok()?;
        Some(a * per + hit.chunk as usize)
    };

    let mut modes = Vec::new();
    let sweep: Vec<(usize, &str, bool)> = args
        .hnsw_ef
        .iter()
        .flat_map(|&ef| {
            [("tenant", false), ("tenant+lang+channel+validity", true)]
                .map(|(name, narrow)| (ef, name, narrow))
        })
        .collect();
    let mut truths: Vec<Option<Vec<Vec<usize>>>> = vec![None, None];
    for (ef, name, narrow) in sweep {
        index.set_hnsw_ef(ef);
        let filter = SearchFilter {
            tenant: TENANT.into(),
            lang: narrow.then(|| "zh".into()),
            channel: narrow.then(|| "phone".into()),
            at_ms: NOW_MS,
        };
        let keep = |c: usize| {
            let m = chunk_meta[c];
            (!m.expired) && (!narrow || m.matches_narrow())
        };
        let slot = &mut truths[usize::from(narrow)];
        if slot.is_none() {
            *slot = Some(exact_top(&data, &qt, 10, &keep)?);
        }
        let truth = slot.as_deref().unwrap_or_default();
        // Warm-up searches, then the timed pass.
        for q in queries.iter().cycle().take(args.warmup) {
            index.search(&Query::Dense(q.clone()), &filter, 10)?;
        }
        let mut latencies = Vec::with_capacity(queries.len());
        let mut found = 0usize;
        let mut expected = 0usize;
        for (q, t) in queries.iter().zip(truth) {
            let query = Query::Dense(q.clone());
            let t0 = Instant::now();
            let hits = index.search(&query, &filter, 10)?;
            latencies.push(t0.elapsed().as_secs_f64() * 1e3);
            let got: Vec<usize> = hits.iter().filter_map(chunk_of).collect();
            found += t.iter().filter(|c| got.contains(c)).count();
            expected += t.len();
        }
        latencies.sort_by(f64::total_cmp);
        let matching = (0..written).filter(|&c| keep(c)).count();
        modes.push(json!({
            "hnsw_ef": ef,
            "filter": name,
            "matching_chunks": matching,
            "p50_ms": percentile(&latencies, 0.50),
            "p99_ms": percentile(&latencies, 0.99),
            "max_ms": percentile(&latencies, 1.0),
            "recall_at_10": found as f64 / expected.max(1) as f64,
        }));
    }
    println!(
        "{}",
        json!({
            "points": written,
            "counted": count,
            "dim": args.dim,
            "articles": articles,
            "clusters": args.clusters,
            "spread": args.spread,
            "queries": args.queries,
            "ingest_points_per_s": written as f64 / ingest_s,
            "reused": args.reuse,
            "open_s": open_s,
            "ingest_s": ingest_s,
            "optimize_s": optimize_s,
            "segments": segments,
            "indexed_vectors": indexed_vectors,
            "hnsw_m": args.hnsw_m,
            "ef_construct": args.ef_construct,
            "quantization": args.quantization,
            "oversampling": args.oversampling,
            "acorn": args.acorn,
            "max_segment_mb": args.max_segment_mb,
            "indexing_threshold_kb": args.indexing_threshold_kb,
            "segments_target": args.segments,
            "search": modes,
            "rss_after_build_mib": index_rss_mib,
            "peak_rss_mib": kib_from_status("VmHWM:") / 1024,
            "disk_mib": disk_bytes(&args.dir) / (1 << 20),
        })
    );
    Ok(())
}
