//! The one place where errors become gRPC status codes.

use confidant_inference::InferenceError;
use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::bot::BotError;
use crate::classify::ClassifyError;
use crate::index::IndexError;
use crate::kb::KbError;
use crate::store::StoreError;

/// Errors of the service layer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kb(#[from] KbError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Bot(#[from] BotError),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn inference_code(e: &InferenceError) -> Code {
    use InferenceError as E;
    match e {
        E::InvalidInput { .. } => Code::InvalidArgument,
        E::Overloaded { .. } => Code::ResourceExhausted,
        E::WorkerStopped => Code::Unavailable,
        E::ModelDirMissing(_)
        | E::Manifest { .. }
        | E::ChecksumMismatch { .. }
        | E::FileMissing { .. }
        | E::Config { .. }
        | E::Tokenizer(_)
        | E::Import { .. }
        | E::Io { .. } => Code::FailedPrecondition,
        E::Device(_) | E::Compute(_) => Code::Internal,
    }
}

fn store_code(e: &StoreError) -> Code {
    match e {
        StoreError::NotFound(_) => Code::NotFound,
        StoreError::UnsupportedUrl(_) => Code::FailedPrecondition,
        StoreError::Database(_) | StoreError::Migrate(_) => Code::Unavailable,
    }
}

fn kb_code(e: &KbError) -> Code {
    match e {
        KbError::Invalid { .. } => Code::InvalidArgument,
        KbError::NotFound(_) => Code::NotFound,
        KbError::Store(s) => store_code(s),
        KbError::Inference(i) => inference_code(i),
        KbError::Index(IndexError::Open { .. } | IndexError::Engine(_)) | KbError::Task(_) => {
            Code::Internal
        }
    }
}

fn classify_code(e: &ClassifyError) -> Code {
    use confidant_inference::classifier::ClassifierError as C;
    match e {
        ClassifyError::NotFound(_) => Code::NotFound,
        ClassifyError::Inference(i) => inference_code(i),
        ClassifyError::Classifier(C::InvalidInput { .. }) => Code::InvalidArgument,
        ClassifyError::Dir { .. } | ClassifyError::Load { .. } | ClassifyError::Encoder { .. } => {
            Code::FailedPrecondition
        }
        ClassifyError::Classifier(_) => Code::Internal,
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        // A job's errors are those of the layers it called, or the caller's mistakes.
        let e = match e {
            ServiceError::Bot(b) => match b {
                BotError::Invalid { field, message } => {
                    ServiceError::InvalidArgument { field, message }
                }
                BotError::NotFound(what) => ServiceError::Store(StoreError::NotFound(what)),
                BotError::Store(s) => ServiceError::Store(s),
                BotError::Kb(k) => ServiceError::Kb(k),
                BotError::Classify(c) => ServiceError::Classify(c),
                BotError::Inference(i) => ServiceError::Inference(i),
                BotError::Precondition(m) => ServiceError::FailedPrecondition(m),
                other @ BotError::Random(_) => ServiceError::Bot(other),
            },
            other => other,
        };
        // One kind of storage failure, however it travelled.
        let e = match e {
            ServiceError::Kb(KbError::Store(s)) => ServiceError::Store(s),
            ServiceError::Kb(KbError::Inference(i))
            | ServiceError::Classify(ClassifyError::Inference(i)) => ServiceError::Inference(i),
            other => other,
        };
        let code = match &e {
            ServiceError::InvalidArgument { .. } => Code::InvalidArgument,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Inference(inner) => inference_code(inner),
            ServiceError::Auth(AuthError::Unauthenticated(_)) => Code::Unauthenticated,
            ServiceError::Auth(AuthError::PermissionDenied(_)) => Code::PermissionDenied,
            ServiceError::Store(s) => store_code(s),
            ServiceError::Kb(k) => kb_code(k),
            ServiceError::Classify(c) => classify_code(c),
            ServiceError::Bot(_) => Code::Internal,
        };
        if matches!(
            e,
            ServiceError::Store(StoreError::Database(_) | StoreError::Migrate(_))
        ) {
            tracing::error!(error = %e, "storage error");
            return Status::unavailable("storage unavailable; see the daemon's log");
        }
        if code == Code::Internal {
            // Internal details go to the log, not to the caller.
            tracing::error!(error = %e, "internal error");
            return Status::internal("internal error; see the daemon's log");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_mistakes_are_never_internal() {
        let s: Status = ServiceError::invalid("texts[2]", "must not be empty").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "texts[2]: must not be empty");
        let s: Status = ServiceError::from(InferenceError::Overloaded { capacity: 4 }).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s: Status = ServiceError::from(InferenceError::InvalidInput {
            field: "texts[0]".into(),
            message: "x".into(),
        })
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = ServiceError::from(InferenceError::Device("gpu fell off".into())).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("gpu"));
        let s: Status =
            ServiceError::from(AuthError::PermissionDenied("needs admin".into())).into();
        assert_eq!(s.code(), Code::PermissionDenied);
        let s: Status = ServiceError::from(StoreError::NotFound("token x".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = ServiceError::from(KbError::NotFound("article \"x\"".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = ServiceError::from(KbError::Invalid {
            field: "articles[2].answer".into(),
            message: "must not be empty".into(),
        })
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "articles[2].answer: must not be empty");
        let s: Status = ServiceError::from(KbError::Inference(InferenceError::Overloaded {
            capacity: 1,
        }))
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s: Status =
            ServiceError::from(KbError::Index(IndexError::Engine("segment 7".into()))).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("segment"));
        let s: Status = ServiceError::from(ClassifyError::NotFound("routing".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("routing"));
        let s: Status = ServiceError::from(BotError::Invalid {
            field: "conversation_id".into(),
            message: "bad".into(),
        })
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "conversation_id: bad");
        let s: Status = ServiceError::from(BotError::NotFound("conversation \"c\"".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = ServiceError::from(BotError::Kb(KbError::Inference(
            InferenceError::Overloaded { capacity: 1 },
        )))
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s: Status = ServiceError::from(ClassifyError::Inference(InferenceError::Overloaded {
            capacity: 1,
        }))
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
