//! The vector index: one trait, back-ends behind it. The index is derived data: the
//! knowledge base's database rows are the source of truth, and everything here can be
//! rebuilt from them (`confidantctl kb reindex`), which is why a back-end only has to be
//! durable enough to say, after a crash, what it holds (`inventory`).
//!
//! Each point is one chunk of one article (a question variant or a passage) with a dense
//! vector from the embedding model and a BM25 sparse vector; the payload carries what the
//! filters need (tenant, language, channels, validity window) and what the catch-up needs
//! (article id, version, chunk number, chunk count).

mod embedded;
mod locator;
mod server;

pub use embedded::EmbeddedIndex;
pub use server::{ServerIndex, ServerOptions};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector index at {path}: {message}")]
    Open { path: String, message: String },
    #[error("vector index: {0}")]
    Engine(String),
}

/// How dense vectors are stored and searched. Each back-end applies what it supports; the
/// embedded one also re-applies a changed setting to an existing index (its optimiser
/// rebuilds the segments in the background, searches stay correct meanwhile).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexTuning {
    /// Candidates an HNSW search explores (at least the number of hits asked for).
    pub hnsw_ef: usize,
    /// Graph edges per node.
    pub hnsw_m: usize,
    /// Candidates considered while the graph is built.
    pub hnsw_ef_construct: usize,
    /// Scalar int8 copies of the vectors, searched first; the best `oversampling` × limit
    /// candidates are then re-scored with the full vectors.
    pub quantization: Quantization,
    pub oversampling: f64,
    /// ACORN for filtered dense searches: the graph walk also looks at neighbours'
    /// neighbours, so that several filters that each pass part of the chunks do not cut the
    /// graph into pieces the walk cannot cross. Used where the engine estimates that at
    /// most 40% of the chunks pass. Off by default: it multiplies those searches' time by
    /// 10 or more (benches/README.md).
    pub acorn: bool,
    /// Largest segment the optimiser builds, in MiB (0: the engine's default, 256 MiB per
    /// indexing thread). Every segment is one more HNSW graph a search walks.
    pub max_segment_mb: usize,
    /// How many segments the optimiser merges towards (0: the engine's default, one per
    /// two CPUs, at least 2).
    pub segments: usize,
    /// Segments with more than this many KiB of vectors get an HNSW graph; smaller ones
    /// are searched exhaustively, every point on every search (0: the engine's 10,000,
    /// ~6,500 chunks of 384 floats). The default, 2,000 (~1,300 chunks), keeps the tail
    /// of an import from being scanned on every search: on a 115k-chunk knowledge base a
    /// plain segment of 2,300 chunks cost 8% of a bot answer's CPU (benches/README.md).
    pub indexing_threshold_kb: usize,
}

/// The compact copy of the dense vectors a search walks the graph with (re-scored with
/// the full vectors afterwards), kept in RAM. Copies smaller than int8 save RAM; on a
/// 115k-chunk knowledge base each searched slower than int8 (benches/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    None,
    /// 8 bits per component (a quarter of f32).
    Int8,
    /// TurboQuant: a random rotation, then 4 (or 2) bits per component from a fitted
    /// codebook (an eighth, a sixteenth of f32).
    Turbo4,
    Turbo2,
    /// Two bits per component; the query keeps 8 bits (asymmetric).
    Binary2,
}

impl Quantization {
    pub const ALL: [Self; 5] = [
        Self::None,
        Self::Int8,
        Self::Turbo4,
        Self::Turbo2,
        Self::Binary2,
    ];

    /// From the config file's name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }

    /// Every name, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Int8 => "int8",
            Self::Turbo4 => "turbo4",
            Self::Turbo2 => "turbo2",
            Self::Binary2 => "binary2",
        }
    }
}

impl Default for IndexTuning {
    fn default() -> Self {
        Self {
            // int8 copies searched first, re-scored with the full vectors: on a real
            // 115k-chunk knowledge base, recall within build-to-build noise of f32 at about
            // half the search time, so a wider search (192) costs less than f32's 128 did
            // and recalls more (benches/README.md, "int8 index vectors by default").
            hnsw_ef: 192,
            hnsw_m: 16,
            hnsw_ef_construct: 100,
            quantization: Quantization::Int8,
            oversampling: 2.0,
            acorn: false,
            max_segment_mb: 0,
            segments: 0,
            indexing_threshold_kb: 2000,
        }
    }
}

/// What a chunk is: a question variant (matched question-to-question) or a passage of
/// the answer or body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Question,
    Passage,
}

impl ChunkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Question => "question",
            ChunkKind::Passage => "passage",
        }
    }
}

/// Sentinels for an open validity window, so that range filters need no null handling.
pub const VALID_FROM_OPEN: i64 = 0;
pub const VALID_UNTIL_OPEN: i64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z
/// Articles without channels are shown on every channel: they carry this one.
pub const ANY_CHANNEL: &str = "*";

#[derive(Debug, Clone)]
pub struct Point {
    pub tenant: String,
    pub article_id: String,
    pub version: i64,
    pub chunk: u32,
    pub chunks: u32,
    pub kind: ChunkKind,
    pub lang: String,
    pub channels: Vec<String>,
    pub valid_from: i64,
    pub valid_until: i64,
    pub dense: Vec<f32>,
    pub sparse: SparseVector,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// Every search is scoped to one tenant; the rest narrows further where given.
#[derive(Debug, Clone)]
pub struct SearchFilter {
    pub tenant: String,
    pub lang: Option<String>,
    pub channel: Option<String>,
    /// Only articles valid at this instant (Unix ms).
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub enum Query {
    Dense(Vec<f32>),
    Sparse(SparseVector),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub article_id: String,
    pub chunk: u32,
    pub score: f32,
}

/// What the index holds for one article: the catch-up compares it with the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub tenant: String,
    pub article_id: String,
    /// Distinct versions among the article's points (more than one: a write was cut off).
    pub versions: Vec<i64>,
    pub points: u32,
    pub chunks: u32,
}

impl Indexed {
    /// True when the index holds exactly `version`, complete.
    pub fn is_complete(&self, version: i64) -> bool {
        self.versions == [version] && self.points == self.chunks
    }
}

/// Folds a back-end's points, one at a time, into what the index holds per article.
#[derive(Default)]
pub(crate) struct InventoryBuilder(std::collections::BTreeMap<(String, String), Indexed>);

impl InventoryBuilder {
    /// One point's payload: `version` and `chunks` as stored (-1 where missing).
    pub(crate) fn add(&mut self, tenant: String, article_id: String, version: i64, chunks: i64) {
        let chunks = chunks.max(0) as u32;
        let entry = self
            .0
            .entry((tenant.clone(), article_id.clone()))
            .or_insert_with(|| Indexed {
                tenant,
                article_id,
                versions: Vec::new(),
                points: 0,
                chunks,
            });
        if !entry.versions.contains(&version) {
            entry.versions.push(version);
            entry.versions.sort_unstable();
        }
        entry.points += 1;
        // Disagreeing chunk counts mean a cut-off write: make it look incomplete.
        if entry.chunks != chunks {
            entry.chunks = u32::MAX;
        }
    }

    pub(crate) fn finish(self) -> Vec<Indexed> {
        self.0.into_values().collect()
    }
}

/// A vector index back-end. Blocking calls: the daemon runs them on its blocking pool.
pub trait VectorIndex: Send + Sync {
    /// Puts `points` (all of one article's chunks at one version) in place of whatever the
    /// index held for the article. New points are written before the old ones go, so the
    /// article never disappears from searches during an update.
    fn replace_article(
        &self,
        tenant: &str,
        article_id: &str,
        version: i64,
        points: Vec<Point>,
    ) -> Result<(), IndexError>;
    fn delete_article(&self, tenant: &str, article_id: &str) -> Result<(), IndexError>;
    /// Deletes every point of a tenant (erasure) or, with `None`, of every tenant (rebuild).
    fn delete_all(&self, tenant: Option<&str>) -> Result<(), IndexError>;
    fn search(
        &self,
        query: &Query,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError>;
    fn inventory(&self) -> Result<Vec<Indexed>, IndexError>;
    fn count(&self, tenant: Option<&str>) -> Result<usize, IndexError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), IndexError>;
    /// Background maintenance (HNSW build, segment merges); true when it did something.
    fn optimize(&self) -> Result<bool, IndexError>;
}

/// A point's id: stable for (tenant, article, chunk), so that rewriting an article
/// overwrites its points instead of adding to them.
pub fn point_uuid(tenant: &str, article_id: &str, chunk: u32) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(article_id.as_bytes());
    h.update([0]);
    h.update(chunk.to_le_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_and_distinct() {
        assert_eq!(point_uuid("t", "a", 0), point_uuid("t", "a", 0));
        assert_ne!(point_uuid("t", "a", 0), point_uuid("t", "a", 1));
        assert_ne!(point_uuid("t", "a", 0), point_uuid("u", "a", 0));
        // The separator keeps ("ta", "") and ("t", "a") apart.
        assert_ne!(point_uuid("ta", "", 0), point_uuid("t", "a", 0));
    }

    #[test]
    fn embedded_backend_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        suite::run_all(&|| {
            EmbeddedIndex::open(&dir.path().join("idx"), 4, &IndexTuning::default()).unwrap()
        });
    }

    #[test]
    fn embedded_backend_with_f32_vectors_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = IndexTuning {
            quantization: Quantization::None,
            ..IndexTuning::default()
        };
        suite::run_all(&|| EmbeddedIndex::open(&dir.path().join("idx"), 4, &tuning).unwrap());
    }

    #[test]
    fn embedded_backend_with_int8_vectors_and_acorn_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = IndexTuning {
            quantization: Quantization::Int8,
            acorn: true,
            hnsw_ef: 16,
            segments: 1,
            ..IndexTuning::default()
        };
        suite::run_all(&|| EmbeddedIndex::open(&dir.path().join("idx"), 4, &tuning).unwrap());
    }

    /// A site that turns quantisation on (or upgrades from a version whose default was
    /// f32, or changes the graph) keeps its index: the new settings are written into the
    /// engine's configuration and the points stay.
    #[test]
    fn reopening_with_other_tuning_keeps_the_points_and_records_the_tuning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        {
            let f32_only = IndexTuning {
                quantization: Quantization::None,
                ..IndexTuning::default()
            };
            let index = EmbeddedIndex::open(&path, 4, &f32_only).unwrap();
            for a in 0..30 {
                let id = format!("a{a}");
                let points = (0..2).map(|c| suite::point("t1", &id, 1, c, 2)).collect();
                index.replace_article("t1", &id, 1, points).unwrap();
            }
            index.flush().unwrap();
        }
        let tuning = IndexTuning {
            quantization: Quantization::Int8,
            hnsw_m: 8,
            max_segment_mb: 64,
            ..IndexTuning::default()
        };
        let index = EmbeddedIndex::open(&path, 4, &tuning).unwrap();
        assert_eq!(index.count(None).unwrap(), 60);
        while index.optimize().unwrap() {}
        let hits = index
            .search(
                &Query::Dense(vec![1.0, 0.0, 0.0, 0.0]),
                &suite::filter("t1"),
                3,
            )
            .unwrap();
        assert_eq!(hits.len(), 3);
        let stored = std::fs::read_to_string(path.join("edge_config.json")).unwrap();
        assert!(stored.contains("int8"), "{stored}");
        assert!(stored.contains("\"m\":8"), "{stored}");
    }

    /// Every compact copy the config offers is built by the optimiser, recorded in the
    /// engine's configuration, and searched with re-scoring: the graph's first hit is
    /// exact search's for nearly every query.
    #[test]
    fn every_quantization_is_built_and_finds_the_nearest_chunk() {
        const DIM: usize = 64;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut unit = || {
            let v: Vec<f32> = (0..DIM)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let data: Vec<Vec<f32>> = (0..2000).map(|_| unit()).collect();
        let queries: Vec<Vec<f32>> = (0..40).map(|_| unit()).collect();
        for q in Quantization::ALL {
            let name = q.name();
            assert_eq!(Quantization::parse(name), Some(q));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("idx");
            let tuning = IndexTuning {
                quantization: q,
                indexing_threshold_kb: 1,
                segments: 1,
                ..IndexTuning::default()
            };
            let mut index = EmbeddedIndex::open(&path, DIM, &tuning).unwrap();
            for (a, chunk) in data.chunks(5).enumerate() {
                let id = format!("a{a}");
                let points = (0..5u32)
                    .map(|c| Point {
                        dense: chunk[c as usize].clone(),
                        ..suite::point("t1", &id, 1, c, 5)
                    })
                    .collect();
                index.replace_article("t1", &id, 1, points).unwrap();
            }
            while index.optimize().unwrap() {}
            // Each point's dense and sparse vectors both count as indexed.
            assert_eq!(index.segments().1, 4000, "{name}: every vector indexed");
            let stored = std::fs::read_to_string(path.join("edge_config.json")).unwrap();
            let kind = match q {
                Quantization::None => None,
                Quantization::Int8 => Some("\"scalar\""),
                Quantization::Turbo4 => Some("\"bits4\""),
                Quantization::Turbo2 => Some("\"bits2\""),
                Quantization::Binary2 => Some("\"two_bits\""),
            };
            match kind {
                Some(k) => assert!(stored.contains(k), "{name}: {stored}"),
                None => assert!(
                    ["scalar", "turbo", "binary"]
                        .iter()
                        .all(|k| !stored.contains(k)),
                    "{stored}"
                ),
            }
            let first = |index: &EmbeddedIndex| -> Vec<Hit> {
                let f = suite::filter("t1");
                queries
                    .iter()
                    .map(|v| index.search(&Query::Dense(v.clone()), &f, 10).unwrap()[0].clone())
                    .collect()
            };
            let graph = first(&index);
            index.set_exact(true);
            let exact = first(&index);
            let same = graph
                .iter()
                .zip(&exact)
                .filter(|(g, e)| {
                    (g.article_id.as_str(), g.chunk) == (e.article_id.as_str(), e.chunk)
                })
                .count();
            assert!(
                same >= 38,
                "{name}: {same} of 40 first hits are exact search's"
            );
            // Re-scored with the full vectors: the scores are the exact cosines.
            for (g, e) in graph.iter().zip(&exact) {
                if g.article_id == e.article_id && g.chunk == e.chunk {
                    assert!((g.score - e.score).abs() < 1e-4, "{name}: {g:?} {e:?}");
                }
            }
        }
    }

    /// Searches name each hit's article and chunk from memory; a point the locator does
    /// not know (a search racing a write) is read from its payload instead, and a reopened
    /// index knows every point again.
    #[test]
    fn hits_are_located_from_memory_or_else_from_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let located = |index: &EmbeddedIndex| {
            let mut h: Vec<(String, u32)> = index
                .search(
                    &Query::Dense(vec![1.0, 0.1, 0.1, 0.1]),
                    &suite::filter("t1"),
                    100,
                )
                .unwrap()
                .into_iter()
                .map(|h| (h.article_id, h.chunk))
                .collect();
            h.sort();
            h
        };
        let expected: Vec<(String, u32)> = (0..5)
            .flat_map(|a| (0..3).map(move |c| (format!("a{a}"), c)))
            .collect();
        let index = EmbeddedIndex::open(&path, 4, &IndexTuning::default()).unwrap();
        for a in 0..5 {
            let id = format!("a{a}");
            let points = (0..3).map(|c| suite::point("t1", &id, 1, c, 3)).collect();
            index.replace_article("t1", &id, 1, points).unwrap();
        }
        assert_eq!(index.located_points(), 15);
        assert_eq!(located(&index), expected);
        index.forget_locations();
        assert_eq!(located(&index), expected, "read from the payloads");
        index.flush().unwrap();
        drop(index);
        let index = EmbeddedIndex::open(&path, 4, &IndexTuning::default()).unwrap();
        assert_eq!(index.located_points(), 15);
        assert_eq!(located(&index), expected);
    }

    #[test]
    fn the_inventory_read_at_open_is_served_once_and_never_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let index = EmbeddedIndex::open(&path, 4, &IndexTuning::default()).unwrap();
        for a in ["a", "b", "c"] {
            let points = (0..2).map(|c| suite::point("t1", a, 1, c, 2)).collect();
            index.replace_article("t1", a, 1, points).unwrap();
        }
        // A write cut off after one chunk of two.
        index
            .replace_article("t2", "d", 1, vec![suite::point("t2", "d", 1, 0, 2)])
            .unwrap();
        index.flush().unwrap();
        drop(index);
        let ids = |inv: &[Indexed]| -> Vec<(String, String, bool)> {
            inv.iter()
                .map(|i| (i.tenant.clone(), i.article_id.clone(), i.is_complete(1)))
                .collect()
        };
        let index = EmbeddedIndex::open(&path, 4, &IndexTuning::default()).unwrap();
        let opened = index.inventory().unwrap();
        let scrolled = index.inventory().unwrap();
        assert_eq!(ids(&opened), ids(&scrolled));
        assert_eq!(
            ids(&opened),
            [
                ("t1".into(), "a".into(), true),
                ("t1".into(), "b".into(), true),
                ("t1".into(), "c".into(), true),
                ("t2".into(), "d".into(), false),
            ]
        );
        drop(index);
        let index = EmbeddedIndex::open(&path, 4, &IndexTuning::default()).unwrap();
        index.delete_article("t1", "b").unwrap();
        let after: Vec<String> = index
            .inventory()
            .unwrap()
            .into_iter()
            .map(|i| i.article_id)
            .collect();
        assert_eq!(after, ["a", "c", "d"], "the write is in the inventory");
    }

    /// Runs against a real Qdrant server where CONFIDANT_TEST_QDRANT_URL names one
    /// (e.g. http://127.0.0.1:6334; CONFIDANT_TEST_QDRANT_API_KEY if it wants a key), in
    /// a collection of its own that it drops afterwards.
    #[test]
    fn qdrant_server_backend_passes_the_shared_suite() {
        let Ok(url) = std::env::var("CONFIDANT_TEST_QDRANT_URL") else {
            eprintln!(
                "SKIPPED: qdrant_server_backend_passes_the_shared_suite: set CONFIDANT_TEST_QDRANT_URL \
                 to a Qdrant server's gRPC address to run the index suite against it"
            );
            return;
        };
        let options = ServerOptions {
            url,
            api_key: std::env::var("CONFIDANT_TEST_QDRANT_API_KEY").ok(),
            collection: format!("confidant-test-{}", std::process::id()),
            timeout: std::time::Duration::from_secs(10),
            tuning: IndexTuning::default(),
        };
        // Every open reaches the same collection, as a restart would.
        suite::run_all(&|| ServerIndex::open(&options, 4).unwrap());
        ServerIndex::open(&options, 4)
            .unwrap()
            .drop_collection()
            .unwrap();
    }
}
