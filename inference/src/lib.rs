//! Confidant's inference engine.
//!
//! Loads sentence-embedding models from local directories (Hugging Face layout plus a
//! `confidant-model.toml` manifest of SHA-256 sums) and serves them through a dynamic
//! batcher: callers enqueue texts, workers form batches by a token budget and a short
//! maximum wait, and a full queue is refused at once with [`InferenceError::Overloaded`].
//!
//! No gRPC and no database here: the daemon and the CLI build on this crate.

mod batcher;
pub mod classifier;
mod device;
mod error;
pub mod import;
mod manifest;
mod model;
mod native;
mod pooling;
mod st_config;
mod tokenize;

pub use batcher::{Admission, BatchEncoder, Batcher, BatcherConfig, BatcherStats};
pub use device::DeviceKind;
pub use error::InferenceError;
pub use manifest::{
    Architecture, MANIFEST_FILE, Manifest, ModelInfo, Pooling, Scores, sha256_file,
};
pub use model::{Embedding, EmbeddingModel, LoadOptions};
pub use native::{amx_available, avx512_bf16_available, int8_available, int8_engine};
pub use tokenize::{Encoded, InputKind};

pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

/// The CPU threads the encoders may use: `RAYON_NUM_THREADS` when set, else the
/// physical cores (what Candle's own kernels use).
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}
