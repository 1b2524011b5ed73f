//! `confidant.v1.EmbeddingService`: validates, delegates to the batcher, translates.

use std::sync::Arc;

use confidant_inference::InputKind;
use confidant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::observe::observed;
use crate::app::App;

pub struct EmbeddingService {
    app: Arc<App>,
}

impl EmbeddingService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    async fn embed(&self, req: pb::EmbedRequest) -> Result<pb::EmbedResponse, ServiceError> {
        super::check_texts(&req.texts, &self.app.config().limits)?;
        let kind = match pb::InputKind::try_from(req.kind) {
            Ok(pb::InputKind::Passage) => InputKind::Passage,
            Ok(_) => InputKind::Query,
            Err(_) => {
                return Err(ServiceError::invalid(
                    "kind",
                    format!("unknown input kind {}", req.kind),
                ));
            }
        };
        let batcher = self.app.batcher();
        let model = batcher.current();
        let out = batcher.embed(&req.texts, kind).await?;
        Ok(pb::EmbedResponse {
            model: model.manifest().model.name.clone(),
            dimension: model.dimension() as u32,
            embeddings: out
                .into_iter()
                .map(|e| pb::Embedding {
                    vector: e.vector,
                    tokens: e.tokens as u32,
                    truncated: e.truncated,
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::embedding_service_server::EmbeddingService for EmbeddingService {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        observed("Embed", async {
            // Any role may embed: vectors carry no tenant data.
            crate::auth::identity(&request)?;
            self.embed(request.into_inner()).await
        })
        .await
    }
}
