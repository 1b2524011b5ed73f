use std::path::PathBuf;

/// Everything that can go wrong in the inference layer. The daemon maps these to gRPC
/// status codes in one place (`rpc::status`).
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("model directory {0}: not found or not a directory")]
    ModelDirMissing(PathBuf),
    #[error("model manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("model file {file}: SHA-256 mismatch (manifest {expected}, found {actual})")]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("model file {file}: listed in the manifest but missing")]
    FileMissing { file: String },
    #[error("model config {file}: {message}")]
    Config { file: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("inference queue is full ({capacity} requests waiting); retry later")]
    Overloaded { capacity: usize },
    #[error("inference worker has stopped")]
    WorkerStopped,
    #[error("device: {0}")]
    Device(String),
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("model import from {file}: {message}")]
    Import { file: PathBuf, message: String },
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InferenceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.to_string(),
            message: message.into(),
        }
    }
}
