use std::path::PathBuf;

/// What can go wrong training, loading or running a classifier head.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("classifier {path}: {message}")]
    Artefact { path: PathBuf, message: String },
    #[error(
        "classifier {path} was trained against encoder {trained} but the encoder in use is {serving}: retrain it with `confidantctl intents train`"
    )]
    EncoderMismatch {
        path: PathBuf,
        trained: String,
        serving: String,
    },
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("training data: {0}")]
    Data(String),
    #[error("classifier computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClassifierError {
    pub(crate) fn artefact(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Artefact {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
