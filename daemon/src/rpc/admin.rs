//! `confidant.v1.AdminService`: status and model reload for operators.

use std::sync::Arc;

use confidant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::observe::observed;
use crate::app::App;
use crate::ops::reload;

pub struct AdminService {
    app: Arc<App>,
    config_path: Option<std::path::PathBuf>,
}

impl AdminService {
    pub fn new(app: Arc<App>, config_path: Option<std::path::PathBuf>) -> Self {
        Self { app, config_path }
    }
}

pub(crate) fn model_status(app: &App) -> Vec<pb::ModelStatus> {
    let model = app.batcher().current();
    let m = model.manifest();
    vec![pb::ModelStatus {
        role: "embedding".into(),
        name: m.model.name.clone(),
        directory: model.dir().display().to_string(),
        dimension: m.model.dimension as u32,
        max_seq_length: m.model.max_seq_length as u32,
        languages: m.model.languages.clone(),
        fingerprint: m.fingerprint(),
        load_seconds: model.load_seconds(),
        device: app.config().model.device.clone(),
    }]
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        observed("Status", async {
            let q = self.app.batcher().stats();
            Ok(pb::StatusResponse {
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_seconds: self.app.uptime_seconds(),
                models: model_status(&self.app),
                queue: Some(pb::QueueStatus {
                    depth: q.queue_depth as u32,
                    capacity: q.queue_capacity as u32,
                    batches: q.batches,
                    texts: q.texts,
                    rejected: q.rejected,
                    cancelled: q.cancelled,
                    worker_alive: q.worker_alive,
                }),
            })
        })
        .await
    }

    async fn reload_models(
        &self,
        _: Request<pb::ReloadModelsRequest>,
    ) -> Result<Response<pb::ReloadModelsResponse>, Status> {
        observed("ReloadModels", async {
            reload(&self.app, self.config_path.as_deref())
                .await
                .map_err(|e| {
                    ServiceError::FailedPrecondition(format!(
                        "reload failed, previous models keep serving: {e}"
                    ))
                })?;
            Ok(pb::ReloadModelsResponse {
                models: model_status(&self.app),
            })
        })
        .await
    }
}
