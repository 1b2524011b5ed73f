//! `confidant.v1.IntentService`: classify texts with a trained head; list the heads.

use std::sync::Arc;

use confidant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::observe::observed;
use crate::app::App;

const MAX_TOP_K: u32 = 20;

pub struct IntentService {
    app: Arc<App>,
}

impl IntentService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    async fn classify(
        &self,
        req: pb::ClassifyRequest,
    ) -> Result<pb::ClassifyResponse, ServiceError> {
        let config = self.app.config();
        let limits = &config.limits;
        super::check_texts(&req.texts, limits)?;
        if req.top_k > MAX_TOP_K {
            return Err(ServiceError::invalid(
                "top_k",
                format!("{} exceeds {MAX_TOP_K}", req.top_k),
            ));
        }
        let top_k = if req.top_k == 0 {
            3
        } else {
            req.top_k as usize
        };
        let name = if req.classifier.is_empty() {
            config.classifiers.default.as_str()
        } else {
            req.classifier.as_str()
        };
        let (head, predictions) = self
            .app
            .classifiers()
            .classify(self.app.batcher(), name, &req.texts, top_k)
            .await?;
        let threshold = head.classifier.oos_threshold();
        Ok(pb::ClassifyResponse {
            classifier: head.name.clone(),
            version: head.classifier.version().to_string(),
            results: predictions
                .into_iter()
                .map(|p| {
                    let best = p.top.first().cloned().unwrap_or_default();
                    pb::Classification {
                        label: if p.out_of_scope {
                            String::new()
                        } else {
                            best.0
                        },
                        probability: best.1,
                        out_of_scope: p.out_of_scope,
                        oos_score: p.oos_score,
                        oos_threshold: threshold,
                        top: p
                            .top
                            .into_iter()
                            .map(|(label, probability)| pb::LabelScore { label, probability })
                            .collect(),
                    }
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::intent_service_server::IntentService for IntentService {
    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        observed("Classify", async {
            // Any role may classify: heads are site-wide and answers carry no stored data.
            crate::auth::identity(&request)?;
            self.classify(request.into_inner()).await
        })
        .await
    }

    async fn list_classifiers(
        &self,
        request: Request<pb::ListClassifiersRequest>,
    ) -> Result<Response<pb::ListClassifiersResponse>, Status> {
        observed("ListClassifiers", async {
            crate::auth::identity(&request)?;
            Ok(pb::ListClassifiersResponse {
                classifiers: self
                    .app
                    .classifiers()
                    .list()
                    .iter()
                    .map(|h| {
                        let c = &h.classifier;
                        let m = c.metrics();
                        pb::ClassifierInfo {
                            name: h.name.clone(),
                            task: c.task().to_string(),
                            version: c.version().to_string(),
                            labels: c.labels().to_vec(),
                            oos_score: match c.oos_score() {
                                confidant_inference::classifier::OosScore::Nearest => "nearest",
                                confidant_inference::classifier::OosScore::MaxProb => "max-prob",
                            }
                            .into(),
                            oos_threshold: c.oos_threshold(),
                            directory: h.dir.display().to_string(),
                            holdout_accuracy: m.map(|m| m.holdout.in_scope_accuracy).unwrap_or(0.0),
                            holdout_macro_f1: m.map(|m| m.holdout.macro_f1).unwrap_or(0.0),
                            encoder: c.encoder().name.clone(),
                            fine_tuned: h.encoder.is_some(),
                        }
                    })
                    .collect(),
            })
        })
        .await
    }
}
