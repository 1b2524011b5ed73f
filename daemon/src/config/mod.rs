//! The daemon's configuration: one TOML file, every key also settable as an environment
//! variable `CONFIDANT__SECTION__KEY` (which wins over the file). Validated at start; every
//! error names the key at fault.

mod jobs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::index::{IndexTuning, Quantization};
use crate::store::Synchronous;

pub use jobs::{
    AssistConfig, BotConfig, ChecklistItemConfig, PhraseRule, QaConfig, RedactConfig, RiskConfig,
    RoutingConfig,
};

pub const DEFAULT_PATH: &str = "/etc/confidant/confidantd.toml";
const ENV_PREFIX: &str = "CONFIDANT__";

/// A CPU worker's pass and take from the queue when `inference.max_batch_size` is 0. On a
/// CPU a pass of 16 short texts costs per text what one of 64 does, and takes of 64
/// bunched the callers: at saturation (64 callers, 2 cores, ~116k chunks) Answer capacity
/// ~6% higher with 16, Embed ~3%, both p99 30-45% lower (benches/README.md).
pub const CPU_MAX_BATCH_SIZE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Parse(String),
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub inference: InferenceConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub index: IndexConfig,
    pub kb: KbConfig,
    pub classifiers: ClassifiersConfig,
    pub bot: BotConfig,
    pub routing: RoutingConfig,
    pub assist: AssistConfig,
    pub qa: QaConfig,
    pub redact: RedactConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifiersConfig {
    /// Trained heads, one sub-directory each, named by the directory ("intent",
    /// "sentiment"): write them with `confidantctl intents train --out DIR/NAME`. A missing
    /// directory means no heads; a head trained against another encoder stops the start.
    pub dir: PathBuf,
    /// The head `Classify` uses when the request names none.
    pub default: String,
}

impl Default for ClassifiersConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/confidant/classifiers"),
            default: "intent".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// "embedded" (qdrant-edge, in-process, the default) or "qdrant" (a Qdrant server or
    /// cluster the site runs, over gRPC).
    pub backend: String,
    /// The embedded index's directory. Derived data: deleting it makes the daemon rebuild
    /// it from the database at the next start.
    pub path: PathBuf,
    /// How often written index data is made durable (fsync).
    pub flush_interval_seconds: u64,
    /// How often the background optimiser (HNSW build, segment merges) looks for work.
    pub optimize_interval_seconds: u64,
    /// backend = "qdrant": the server's gRPC address (`http://host:6334`, `https://` for TLS).
    pub url: String,
    /// backend = "qdrant": a file holding the server's API key (kept out of the config).
    pub api_key_file: PathBuf,
    /// backend = "qdrant": the collection's name; the model's fingerprint is appended, so
    /// that another model gets its own collection, rebuilt from the database.
    pub collection: String,
    /// backend = "qdrant": per-request timeout.
    pub timeout_seconds: u64,
    /// Candidates an HNSW search explores: more is slower and closer to exact search. With
    /// quantization the engine explores at least `quantization_oversampling` × the hits
    /// asked (2.0 × 50 per signal): a value below that changes nothing (benches/README.md).
    pub hnsw_ef: usize,
    /// HNSW graph edges per node (a change rebuilds the graph in the background).
    pub hnsw_m: usize,
    /// Candidates considered while the graph is built (a change rebuilds it).
    pub hnsw_ef_construct: usize,
    /// The in-RAM copy of the vectors a search walks the graph with, the best candidates
    /// then re-scored with the full vectors: "int8" (default; a quarter of f32), "turbo4",
    /// "turbo2", "binary2" (an eighth, a sixteenth, a sixteenth: for knowledge bases whose
    /// int8 copy does not fit in RAM; each searched slower than int8 at 115k chunks), "none".
    pub quantization: String,
    /// quantization other than "none": candidates re-scored per hit asked for.
    pub quantization_oversampling: f64,
    /// ACORN for filtered searches that most chunks fail (several filters at once): keeps
    /// recall against exact search, at 10× or more the time of those searches.
    pub acorn: bool,
    /// backend = "embedded": the largest segment the optimiser builds, in MiB (0: 256 MiB
    /// per indexing thread). Each segment is one more graph a search walks.
    pub max_segment_mb: usize,
    /// backend = "embedded": the number of segments the optimiser merges towards (0: one
    /// per two CPUs, at least 2).
    pub segments: usize,
    /// backend = "embedded": a segment holding more than this many KiB of vectors gets an
    /// HNSW graph; smaller ones are searched exhaustively (0: the engine's 10,000 KiB,
    /// ~6,500 chunks of 384 floats; default 2,000).
    pub indexing_threshold_kb: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            path: PathBuf::from("/var/lib/confidant/index"),
            flush_interval_seconds: 5,
            optimize_interval_seconds: 30,
            url: String::new(),
            api_key_file: PathBuf::new(),
            collection: "confidant".into(),
            timeout_seconds: 10,
            hnsw_ef: IndexTuning::default().hnsw_ef,
            hnsw_m: IndexTuning::default().hnsw_m,
            hnsw_ef_construct: IndexTuning::default().hnsw_ef_construct,
            quantization: "int8".into(),
            quantization_oversampling: IndexTuning::default().oversampling,
            acorn: IndexTuning::default().acorn,
            max_segment_mb: 0,
            segments: 0,
            indexing_threshold_kb: IndexTuning::default().indexing_threshold_kb,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KbConfig {
    /// Languages articles may be in (lower-case codes, e.g. "en", "zh").
    pub languages: Vec<String>,
    /// Passage size in estimated tokens; keep it below the model's max_seq_length.
    pub chunk_tokens: usize,
    /// Chunks each retrieval signal (dense, lexical) contributes before fusion.
    pub candidates: usize,
    /// MiB of search hits' articles kept in memory, so that the articles most asked about
    /// are not read from the database for every answer; 0: none kept.
    pub article_cache_mb: usize,
    /// How the dense and lexical rankings are fused: "convex" (weighted sum of min-max
    /// normalised scores) or "rrf" (reciprocal rank fusion).
    pub fusion: String,
    /// Convex fusion: the dense signal's weight (the lexical one gets 1 − it).
    pub dense_weight: f32,
    /// RRF: the k of 1/(k + rank).
    pub rrf_k: f32,
    pub max_answer_chars: usize,
    pub max_body_chars: usize,
    pub max_questions: usize,
}

impl Default for KbConfig {
    fn default() -> Self {
        let d = crate::kb::KbSettings::default();
        Self {
            languages: d.rules.languages,
            chunk_tokens: d.chunk_tokens,
            candidates: d.candidates,
            article_cache_mb: d.article_cache_mb,
            fusion: "convex".into(),
            dense_weight: match d.fusion {
                crate::kb::Fusion::Convex { dense_weight } => dense_weight,
                crate::kb::Fusion::Rrf { .. } => 0.7,
            },
            rrf_k: 60.0,
            max_answer_chars: d.rules.max_answer_chars,
            max_body_chars: d.rules.max_body_chars,
            max_questions: d.rules.max_questions,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite:///path/to/file.db` (the embedded default) or `postgres://user@host/db`.
    pub url: String,
    /// SQLite only: "full" (the default) syncs the write-ahead log to disk at every commit,
    /// so a bot turn that was answered is on disk even after a power cut; "normal" syncs at
    /// checkpoints only (a power cut or an OS crash may lose the last turns, an application
    /// crash loses nothing; the database stays consistent either way) for less commit time.
    pub sqlite_synchronous: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:///var/lib/confidant/confidant.db".into(),
            sqlite_synchronous: "full".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Audit records older than this many days are deleted; 0 keeps them for ever.
    pub audit_days: u64,
    /// Bot conversations (turns, decisions) idle this many days, and routing records this
    /// old, are deleted; 0 keeps them for ever.
    pub conversation_days: u64,
    /// QA results older than this many days are deleted; 0 keeps them for ever.
    pub qa_days: u64,
    /// How often the retention task runs.
    pub interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            audit_days: 400,
            conversation_days: 90,
            qa_days: 400,
            interval_seconds: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC over TCP. Without TLS only a loopback address is accepted.
    pub listen: String,
    /// gRPC over a Unix socket for the local CLI; empty disables it.
    pub unix_socket: String,
    /// PEM certificate chain and key; both or neither.
    pub tls_cert: String,
    pub tls_key: String,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    pub tls_client_ca: String,
    /// Prometheus metrics listener; empty disables it.
    pub metrics_listen: String,
    /// In-flight calls get this long to finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// The largest gRPC message accepted, in bytes.
    pub max_request_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            unix_socket: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
            metrics_listen: "127.0.0.1:9464".into(),
            shutdown_grace_seconds: 20,
            max_request_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The embedding model's directory (Hugging Face layout + confidant-model.toml).
    pub dir: PathBuf,
    /// "cpu", "cuda" or "cuda:N".
    pub device: String,
    /// "f32", "f16", "bf16" or "int8" (CPU only); empty for the device's default (f32 on CPU).
    pub dtype: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/confidant/models/all-MiniLM-L6-v2"),
            device: "cpu".into(),
            dtype: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    pub queue_capacity: usize,
    pub max_batch_tokens: usize,
    /// Inputs per forward pass and per worker's take from the queue; 0: per device,
    /// [`CPU_MAX_BATCH_SIZE`] on the CPU, the batcher's default (64) on a GPU.
    pub max_batch_size: usize,
    pub max_wait_ms: u64,
    /// Inference worker threads taking batches from the queue; 0: one per CPU thread on
    /// the CPU (`RAYON_NUM_THREADS`, else the physical cores), one on a GPU.
    pub workers: usize,
    /// A lone text's model pass on the packed f32 kernel (AVX2 or AVX-512 CPUs) shares
    /// each layer with a kept thread when the other cores are idle: lower latency at low
    /// load, ~20% more CPU per text.
    pub share_lone_texts: bool,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        let d = confidant_inference::BatcherConfig::default();
        Self {
            queue_capacity: d.queue_capacity,
            max_batch_tokens: d.max_batch_tokens,
            max_batch_size: 0,
            max_wait_ms: d.max_wait.as_millis() as u64,
            workers: 0,
            share_lone_texts: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_texts_per_request: usize,
    /// Characters (not bytes) per text.
    pub max_text_chars: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_texts_per_request: 128,
            max_text_chars: 8192,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "auto" (JSON under systemd, text on a terminal), "text" or "json".
    pub format: String,
    /// A tracing filter, e.g. "info" or "confidant_daemon=debug".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "auto".into(),
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads `path` (which may be absent only when `required` is false), applies the
    /// environment and validates.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::from_parts(&text, std::env::vars())
    }

    pub fn from_parts(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                apply_env(&mut table, &name, path, &value)?;
            }
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// How the index stores and searches vectors (call after `validate`).
    pub fn index_tuning(&self) -> IndexTuning {
        let ix = &self.index;
        IndexTuning {
            hnsw_ef: ix.hnsw_ef,
            hnsw_m: ix.hnsw_m,
            hnsw_ef_construct: ix.hnsw_ef_construct,
            quantization: Quantization::parse(&ix.quantization).unwrap_or(Quantization::None),
            oversampling: ix.quantization_oversampling,
            acorn: ix.acorn,
            max_segment_mb: ix.max_segment_mb,
            segments: ix.segments,
            indexing_threshold_kb: ix.indexing_threshold_kb,
        }
    }

    /// The Qdrant server's API key, read from `index.api_key_file` (none when unset).
    pub fn qdrant_api_key(&self) -> Result<Option<String>, ConfigError> {
        let file = &self.index.api_key_file;
        if file.as_os_str().is_empty() {
            return Ok(None);
        }
        let key = std::fs::read_to_string(file).map_err(|e| {
            invalid(
                "index.api_key_file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(
                "index.api_key_file",
                format!("{} is empty", file.display()),
            ));
        }
        Ok(Some(key.to_string()))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let addr: SocketAddr = s.listen.parse().map_err(|e| {
            invalid(
                "server.listen",
                format!("{:?} is not an address:port ({e})", s.listen),
            )
        })?;
        if s.tls_cert.is_empty() != s.tls_key.is_empty() {
            return Err(invalid(
                "server.tls_key",
                "server.tls_cert and server.tls_key must be set together",
            ));
        }
        if !s.tls_client_ca.is_empty() && s.tls_cert.is_empty() {
            return Err(invalid(
                "server.tls_client_ca",
                "client certificates need server.tls_cert and server.tls_key",
            ));
        }
        if s.tls_cert.is_empty() && !addr.ip().is_loopback() {
            return Err(invalid(
                "server.listen",
                format!(
                    "{addr} is not a loopback address: set server.tls_cert and server.tls_key to listen on the network"
                ),
            ));
        }
        for (key, file) in [
            ("server.tls_cert", &s.tls_cert),
            ("server.tls_key", &s.tls_key),
            ("server.tls_client_ca", &s.tls_client_ca),
        ] {
            if !file.is_empty() && !Path::new(file).is_file() {
                return Err(invalid(key, format!("{file}: no such file")));
            }
        }
        if !s.metrics_listen.is_empty() {
            s.metrics_listen.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "server.metrics_listen",
                    format!("{:?}: {e}", s.metrics_listen),
                )
            })?;
        }
        if s.max_request_bytes < 1024 {
            return Err(invalid("server.max_request_bytes", "must be at least 1024"));
        }
        self.model
            .device
            .parse::<confidant_inference::DeviceKind>()
            .map_err(|e| invalid("model.device", e))?;
        if !["", "f32", "f16", "bf16", "int8"].contains(&self.model.dtype.as_str()) {
            return Err(invalid("model.dtype", "expected f32, f16, bf16 or int8"));
        }
        if self.model.dir.as_os_str().is_empty() {
            return Err(invalid("model.dir", "must be set"));
        }
        let i = &self.inference;
        for (key, v) in [
            ("inference.queue_capacity", i.queue_capacity),
            ("inference.max_batch_tokens", i.max_batch_tokens),
            (
                "limits.max_texts_per_request",
                self.limits.max_texts_per_request,
            ),
            ("limits.max_text_chars", self.limits.max_text_chars),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        let url = &self.storage.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "storage.url",
                "expected sqlite:///path or postgres://…",
            ));
        }
        if Synchronous::parse(&self.storage.sqlite_synchronous).is_none() {
            return Err(invalid(
                "storage.sqlite_synchronous",
                "expected \"full\" or \"normal\"",
            ));
        }
        let ix = &self.index;
        match ix.backend.as_str() {
            "embedded" => {
                if ix.path.as_os_str().is_empty() {
                    return Err(invalid("index.path", "must be set"));
                }
            }
            "qdrant" => {
                if !(ix.url.starts_with("http://") || ix.url.starts_with("https://")) {
                    return Err(invalid(
                        "index.url",
                        "backend \"qdrant\" needs the server's gRPC address: http://host:6334 or https://…",
                    ));
                }
                let name_ok = !ix.collection.is_empty()
                    && ix.collection.len() <= 200
                    && ix
                        .collection
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !name_ok {
                    return Err(invalid("index.collection", "1–200 of A–Z a–z 0–9 _ -"));
                }
                if ix.timeout_seconds == 0 {
                    return Err(invalid("index.timeout_seconds", "must be positive"));
                }
                self.qdrant_api_key()?;
            }
            other => {
                return Err(invalid(
                    "index.backend",
                    format!("{other:?}: expected \"embedded\" or \"qdrant\""),
                ));
            }
        }
        if !(1..=4096).contains(&ix.hnsw_ef) {
            return Err(invalid("index.hnsw_ef", "expected 1–4096"));
        }
        if !(4..=128).contains(&ix.hnsw_m) {
            return Err(invalid("index.hnsw_m", "expected 4–128"));
        }
        if !(4..=4096).contains(&ix.hnsw_ef_construct) {
            return Err(invalid("index.hnsw_ef_construct", "expected 4–4096"));
        }
        if Quantization::parse(&ix.quantization).is_none() {
            return Err(invalid(
                "index.quantization",
                format!(
                    "{:?}: expected one of {}",
                    ix.quantization,
                    Quantization::names()
                ),
            ));
        }
        if !(1.0..=16.0).contains(&ix.quantization_oversampling) {
            return Err(invalid(
                "index.quantization_oversampling",
                "expected 1.0–16.0",
            ));
        }
        if ix.segments > 64 {
            return Err(invalid("index.segments", "expected 0 (automatic) to 64"));
        }
        let k = &self.kb;
        for (key, v) in [
            (
                "index.flush_interval_seconds",
                self.index.flush_interval_seconds as usize,
            ),
            (
                "index.optimize_interval_seconds",
                self.index.optimize_interval_seconds as usize,
            ),
            ("kb.chunk_tokens", k.chunk_tokens),
            ("kb.candidates", k.candidates),
            ("kb.max_answer_chars", k.max_answer_chars),
            ("kb.max_body_chars", k.max_body_chars),
            ("kb.max_questions", k.max_questions),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if k.chunk_tokens < 16 {
            return Err(invalid("kb.chunk_tokens", "must be at least 16"));
        }
        if !["convex", "rrf"].contains(&k.fusion.as_str()) {
            return Err(invalid("kb.fusion", "expected \"convex\" or \"rrf\""));
        }
        if !(0.0..=1.0).contains(&k.dense_weight) {
            return Err(invalid("kb.dense_weight", "must be between 0 and 1"));
        }
        if !(k.rrf_k.is_finite() && k.rrf_k >= 0.0) {
            return Err(invalid("kb.rrf_k", "must be a non-negative number"));
        }
        if k.languages.is_empty() {
            return Err(invalid("kb.languages", "name at least one language"));
        }
        if let Some(l) = k
            .languages
            .iter()
            .find(|l| l.is_empty() || *l != &l.to_ascii_lowercase() || l.len() > 16)
        {
            return Err(invalid(
                "kb.languages",
                format!("{l:?}: use lower-case codes such as \"en\" or \"zh\""),
            ));
        }
        if self.classifiers.dir.as_os_str().is_empty() {
            return Err(invalid("classifiers.dir", "must be set"));
        }
        if self.classifiers.default.is_empty() {
            return Err(invalid("classifiers.default", "must name a classifier"));
        }
        // The model's own thresholds were checked when its manifest was read; here only
        // the config's values are.
        crate::app::Policies::new(self, &confidant_inference::Scores::default())
            .map_err(|e| invalid(&e.key, e.message))?;
        if self.retention.interval_seconds == 0 {
            return Err(invalid("retention.interval_seconds", "must be positive"));
        }
        if !["auto", "text", "json"].contains(&self.log.format.as_str()) {
            return Err(invalid("log.format", "expected auto, text or json"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
    }

    pub fn batcher(&self) -> confidant_inference::BatcherConfig {
        use confidant_inference::DeviceKind;
        let device = self.load_options().device;
        confidant_inference::BatcherConfig {
            queue_capacity: self.inference.queue_capacity,
            max_batch_tokens: self.inference.max_batch_tokens,
            max_batch_size: match (self.inference.max_batch_size, device) {
                (0, DeviceKind::Cpu) => CPU_MAX_BATCH_SIZE,
                (0, DeviceKind::Cuda(_)) => {
                    confidant_inference::BatcherConfig::default().max_batch_size
                }
                (n, _) => n,
            },
            max_wait: std::time::Duration::from_millis(self.inference.max_wait_ms),
            workers: match (self.inference.workers, device) {
                (0, DeviceKind::Cpu) => confidant_inference::cpu_threads(),
                (0, DeviceKind::Cuda(_)) => 1,
                (n, _) => n,
            },
            threads: confidant_inference::cpu_threads(),
        }
    }

    pub fn kb_settings(&self) -> crate::kb::KbSettings {
        let k = &self.kb;
        crate::kb::KbSettings {
            rules: crate::kb::Rules {
                languages: k.languages.clone(),
                max_answer_chars: k.max_answer_chars,
                max_body_chars: k.max_body_chars,
                max_questions: k.max_questions,
                ..Default::default()
            },
            chunk_tokens: k.chunk_tokens,
            candidates: k.candidates,
            article_cache_mb: k.article_cache_mb,
            fusion: if k.fusion == "rrf" {
                crate::kb::Fusion::Rrf { k: k.rrf_k }
            } else {
                crate::kb::Fusion::Convex {
                    dense_weight: k.dense_weight,
                }
            },
            ..Default::default()
        }
    }

    pub fn load_options(&self) -> confidant_inference::LoadOptions {
        confidant_inference::LoadOptions {
            // Validated above.
            device: self.model.device.parse().unwrap_or_default(),
            dtype: (!self.model.dtype.is_empty()).then(|| self.model.dtype.clone()),
            share_lone_texts: self.inference.share_lone_texts,
            ..Default::default()
        }
    }
}

/// `CONFIDANT__SERVER__LISTEN=…` sets `server.listen`. Values are read as TOML when they
/// parse as such (numbers, booleans, arrays) and as plain strings otherwise.
fn apply_env(
    table: &mut toml::Table,
    name: &str,
    path: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    if keys.iter().any(String::is_empty) {
        return Err(invalid(
            name,
            "malformed variable name: expected CONFIDANT__SECTION__KEY",
        ));
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| invalid(name, "empty key"))?;
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| invalid(name, format!("{k} is not a section")))?;
    }
    cur.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_are_valid() {
        Config::from_parts("", env(&[])).unwrap();
    }

    #[test]
    fn the_shipped_config_file_is_valid() {
        let c = Config::from_parts(include_str!("../../../packaging/confidantd.toml"), env(&[]))
            .unwrap();
        assert_eq!(
            c.routing.queues.get("lost_card").map(String::as_str),
            Some("cards")
        );
        // Thresholds are the model's (its manifest) unless the site sets them.
        assert_eq!(c.bot.min_score, None);
        // Four built-in risk categories stay when the file sets none.
        assert_eq!(c.routing.risk.len(), 4);
        // Passes sized per device, as without the file.
        assert_eq!(c.batcher().max_batch_size, CPU_MAX_BATCH_SIZE);
    }

    #[test]
    fn maps_and_lists_from_the_environment() {
        let c = Config::from_parts(
            "",
            env(&[
                ("CONFIDANT__ROUTING__QUEUES", "{ lost_card = \"cards\" }"),
                ("CONFIDANT__BOT__HUMAN_ONLY", "[\"fraud\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(c.routing.queues.len(), 1);
        assert_eq!(c.bot.human_only, vec!["fraud".to_string()]);
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = Config::from_parts(
            "[server]\nlisten = \"127.0.0.1:1\"\n[inference]\nqueue_capacity = 5\n",
            env(&[
                ("CONFIDANT__SERVER__LISTEN", "127.0.0.1:2"),
                ("CONFIDANT__INFERENCE__MAX_WAIT_MS", "7"),
                ("CONFIDANT__MODEL__DIR", "/opt/m"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2");
        assert_eq!(c.inference.queue_capacity, 5);
        assert_eq!(c.inference.max_wait_ms, 7);
        assert_eq!(c.model.dir, PathBuf::from("/opt/m"));
        assert_eq!(c.inference.workers, 0);
        assert_eq!(c.batcher().workers, confidant_inference::cpu_threads());
        let c = Config::from_parts("", env(&[("CONFIDANT__INFERENCE__WORKERS", "3")])).unwrap();
        assert_eq!(c.batcher().workers, 3);
        assert_eq!(
            c.batcher().max_batch_size,
            CPU_MAX_BATCH_SIZE,
            "0: per device"
        );
        let c =
            Config::from_parts("", env(&[("CONFIDANT__INFERENCE__MAX_BATCH_SIZE", "48")])).unwrap();
        assert_eq!(c.batcher().max_batch_size, 48);
        let c = Config::from_parts("", env(&[("CONFIDANT__MODEL__DEVICE", "cuda")])).unwrap();
        assert_eq!(c.batcher().max_batch_size, 64, "a GPU keeps bigger passes");
        let c = Config::from_parts("", env(&[("CONFIDANT__MODEL__DTYPE", "int8")])).unwrap();
        assert_eq!(c.model.dtype, "int8");
        assert!(!c.load_options().share_lone_texts, "off by default");
        let c = Config::from_parts(
            "",
            env(&[("CONFIDANT__INFERENCE__SHARE_LONE_TEXTS", "true")]),
        )
        .unwrap();
        assert!(c.load_options().share_lone_texts);
        assert_eq!(Config::default().kb_settings().article_cache_mb, 64);
        let c = Config::from_parts("", env(&[("CONFIDANT__KB__ARTICLE_CACHE_MB", "0")])).unwrap();
        assert_eq!(c.kb_settings().article_cache_mb, 0, "0 keeps none");
    }

    #[test]
    fn index_tuning_comes_from_the_file_and_the_environment() {
        assert_eq!(
            Config::from_parts("", env(&[])).unwrap().index_tuning(),
            IndexTuning::default()
        );
        let c = Config::from_parts(
            "[index]\nhnsw_ef = 48\nquantization = \"int8\"\nmax_segment_mb = 4096\n",
            env(&[
                ("CONFIDANT__INDEX__SEGMENTS", "1"),
                ("CONFIDANT__INDEX__ACORN", "true"),
            ]),
        )
        .unwrap();
        let t = c.index_tuning();
        assert_eq!(t.hnsw_ef, 48);
        assert_eq!(t.quantization, Quantization::Int8);
        assert_eq!((t.max_segment_mb, t.segments), (4096, 1));
        assert!(t.acorn);
        for q in Quantization::ALL {
            let c = Config::from_parts("", env(&[("CONFIDANT__INDEX__QUANTIZATION", q.name())]));
            assert_eq!(c.unwrap().index_tuning().quantization, q);
        }
        for (file, key) in [
            ("[index]\nquantization = \"pq\"\n", "index.quantization"),
            ("[index]\nhnsw_ef = 0\n", "index.hnsw_ef"),
            ("[index]\nhnsw_m = 2\n", "index.hnsw_m"),
            (
                "[index]\nquantization_oversampling = 0.5\n",
                "index.quantization_oversampling",
            ),
        ] {
            let e = Config::from_parts(file, env(&[])).unwrap_err().to_string();
            assert!(e.contains(key), "{file:?}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"0.0.0.0:50051\"\n", "server.listen"),
            ("[server]\nlisten = \"nonsense\"\n", "server.listen"),
            ("[model]\ndevice = \"tpu\"\n", "model.device"),
            ("[model]\ndtype = \"int4\"\n", "model.dtype"),
            (
                "[inference]\nqueue_capacity = 0\n",
                "inference.queue_capacity",
            ),
            (
                "[server]\ntls_cert = \"/nonexistent.pem\"\n",
                "server.tls_key",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[storage]\nurl = \"mysql://x\"\n", "storage.url"),
            (
                "[storage]\nsqlite_synchronous = \"off\"\n",
                "storage.sqlite_synchronous",
            ),
            ("[server]\nlisen = \"x\"\n", "lisen"),
            ("[kb]\nlanguages = []\n", "kb.languages"),
            ("[kb]\nchunk_tokens = 4\n", "kb.chunk_tokens"),
            ("[index]\nbackend = \"faiss\"\n", "index.backend"),
            ("[index]\nbackend = \"qdrant\"\n", "index.url"),
            (
                "[index]\nbackend = \"qdrant\"\nurl = \"http://q:6334\"\ncollection = \"a b\"\n",
                "index.collection",
            ),
            (
                "[index]\nbackend = \"qdrant\"\nurl = \"http://q:6334\"\napi_key_file = \"/nonexistent/key\"\n",
                "index.api_key_file",
            ),
            ("[inference]\nqueue_capacity = \"many\"\n", "queue_capacity"),
            ("[bot]\nhuman_only = [\"ghosts\"]\n", "bot.human_only[0]"),
            ("[bot]\nmin_margin = 2.0\n", "bot.min_margin"),
            (
                "[[routing.risk]]\nname = \"x\"\nqueue = \"q\"\npoints = 1\npatterns = [\"(\"]\n",
                "routing.risk[0].patterns[0]",
            ),
            (
                "[[redact.patterns]]\nname = \"ACC\"\nregex = \"[\"\n",
                "redact.patterns[0]",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_parts(text, env(&[])).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "{text:?} gave {err:?}, expected it to name {key}"
            );
        }
        let err = Config::from_parts("", env(&[("CONFIDANT__LIMITS__MAX_TEXT_CHARS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_text_chars"), "{err}");
    }
}
