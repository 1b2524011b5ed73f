//! `confidant.v1.AdminService`: status, model reload, tokens and the audit trail.

use std::sync::Arc;

use confidant_proto::v1 as pb;
use sha2::Digest;
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::observe::observed;
use crate::app::App;
use crate::auth::{self, Identity, Role};
use crate::ops::reload;
use crate::store::{AuditFilter, TokenRecord, now_ms};

pub struct AdminService {
    app: Arc<App>,
    config_path: Option<std::path::PathBuf>,
}

impl AdminService {
    pub fn new(app: Arc<App>, config_path: Option<std::path::PathBuf>) -> Self {
        Self { app, config_path }
    }

    async fn audit(
        &self,
        who: &Identity,
        tenant: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), ServiceError> {
        self.app
            .store()
            .audit(&who.actor, tenant, action, target, detail)
            .await?;
        Ok(())
    }
}

fn admin<T>(req: &Request<T>) -> Result<Identity, ServiceError> {
    let who = auth::identity(req)?;
    who.require(Role::Admin)?;
    Ok(who)
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

fn token_info(t: TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id,
        tenant: t.tenant,
        roles: t.roles,
        description: t.description,
        created_at_ms: t.created_at,
        last_used_at_ms: t.last_used_at.unwrap_or(0),
        revoked_at_ms: t.revoked_at.unwrap_or(0),
    }
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        observed("Status", async {
            let who = admin(&req)?;
            let q = self.app.batcher().stats();
            let (kb_published, kb_drafts) = self
                .app
                .store()
                .kb_counts(who.tenant.as_deref().unwrap_or(""))
                .await?;
            Ok(pb::StatusResponse {
                kb_published,
                kb_drafts,
                kb_index_pending: self.app.kb().pending(),
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
                    workers: q.workers as u32,
                }),
            })
        })
        .await
    }

    async fn reload_models(
        &self,
        req: Request<pb::ReloadModelsRequest>,
    ) -> Result<Response<pb::ReloadModelsResponse>, Status> {
        observed("ReloadModels", async {
            let who = admin(&req)?;
            // Models serve every tenant: only the site operator may swap them.
            if !who.is_local() {
                return Err(auth::AuthError::PermissionDenied(
                    "model reload is for the local operator".into(),
                )
                .into());
            }
            let result = reload(&self.app, self.config_path.as_deref()).await;
            let detail = match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            self.audit(&who, "", "model.reload", "", &detail).await?;
            result.map_err(|e| {
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

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        observed("CreateToken", async {
            let who = admin(&req)?;
            let r = req.into_inner();
            let tenant = who
                .scope(&r.tenant)?
                .ok_or_else(|| ServiceError::invalid("tenant", "required"))?;
            if !valid_tenant(&tenant) {
                return Err(ServiceError::invalid(
                    "tenant",
                    "1–64 characters of letters, digits, '-', '_' or '.'",
                ));
            }
            if r.roles.is_empty() {
                return Err(ServiceError::invalid(
                    "roles",
                    "at least one role is required",
                ));
            }
            let mut roles = Vec::new();
            for (i, role) in r.roles.iter().enumerate() {
                let role: Role = role
                    .parse()
                    .map_err(|e: String| ServiceError::invalid(format!("roles[{i}]"), e))?;
                if !roles.contains(&role) {
                    roles.push(role);
                }
            }
            if r.description.chars().count() > 200 {
                return Err(ServiceError::invalid(
                    "description",
                    "at most 200 characters",
                ));
            }
            let (id, secret) = auth::generate_token().map_err(|e| {
                ServiceError::FailedPrecondition(format!("no system randomness: {e}"))
            })?;
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            self.app
                .store()
                .insert_token(&TokenRecord {
                    id: id.clone(),
                    tenant: tenant.clone(),
                    roles: roles.clone(),
                    token_hash: auth::hash_token(&secret),
                    description: r.description.clone(),
                    created_at: now_ms(),
                    last_used_at: None,
                    revoked_at: None,
                })
                .await?;
            self.app.tokens().refresh().await?;
            self.audit(
                &who,
                &tenant,
                "token.create",
                &id,
                &format!("roles={}", roles.join(",")),
            )
            .await?;
            Ok(pb::CreateTokenResponse {
                id,
                token: secret,
                tenant,
                roles,
            })
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        observed("ListTokens", async {
            let who = admin(&req)?;
            let tenant = who.scope(&req.get_ref().tenant)?;
            let tokens = self.app.store().list_tokens(tenant.as_deref()).await?;
            Ok(pb::ListTokensResponse {
                tokens: tokens.into_iter().map(token_info).collect(),
            })
        })
        .await
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        observed("RevokeToken", async {
            let who = admin(&req)?;
            let id = req.get_ref().id.trim();
            if id.is_empty() {
                return Err(ServiceError::invalid("id", "required"));
            }
            let token = self.app.store().get_token(id).await?;
            // Another tenant's token is reported as absent, not as forbidden: its
            // existence is not this caller's business.
            if who.scope(&token.tenant).is_err() {
                return Err(crate::store::StoreError::NotFound(format!("token {id}")).into());
            }
            self.app.store().revoke_token(id).await?;
            self.app.tokens().refresh().await?;
            self.audit(&who, &token.tenant, "token.revoke", id, "")
                .await?;
            Ok(pb::RevokeTokenResponse {})
        })
        .await
    }

    async fn erase_customer(
        &self,
        req: Request<pb::EraseCustomerRequest>,
    ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        observed("EraseCustomer", async {
            let who = admin(&req)?;
            let r = req.get_ref();
            let tenant = who.scope(&r.tenant)?.ok_or_else(|| {
                ServiceError::invalid(
                    "tenant",
                    "required on the local socket (e.g. --tenant bank1)",
                )
            })?;
            if r.customer_id.trim().is_empty() {
                return Err(ServiceError::invalid("customer_id", "must not be empty"));
            }
            let e = self
                .app
                .store()
                .erase_customer(&tenant, &r.customer_id)
                .await?;
            // The trail must show that an erasure happened without keeping who it was for.
            let digest = sha2::Sha256::digest(format!("{tenant}\u{0}{}", r.customer_id));
            let target = format!("customer-sha256:{}", &hex::encode(digest)[..16]);
            let detail = format!(
                "{} conversations, {} turns, {} decisions, {} routing records, {} QA results",
                e.conversations, e.turns, e.decisions, e.routes, e.qa_results
            );
            self.audit(&who, &tenant, "customer.erase", &target, &detail)
                .await?;
            Ok(pb::EraseCustomerResponse {
                conversations: e.conversations,
                turns: e.turns,
                decisions: e.decisions,
                routes: e.routes,
                qa_results: e.qa_results,
            })
        })
        .await
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        observed("ListAudit", async {
            let who = admin(&req)?;
            let r = req.get_ref();
            if r.limit < 0 {
                return Err(ServiceError::invalid("limit", "must not be negative"));
            }
            let tenant = who.scope(&r.tenant)?;
            let entries = self
                .app
                .store()
                .list_audit(&AuditFilter {
                    tenant,
                    since_ms: Some(r.since_ms),
                    limit: r.limit,
                })
                .await?;
            self.audit(
                &who,
                who.tenant.as_deref().unwrap_or(""),
                "audit.read",
                "",
                "",
            )
            .await?;
            Ok(pb::ListAuditResponse {
                records: entries
                    .into_iter()
                    .map(|e| pb::AuditRecord {
                        at_ms: e.at,
                        actor: e.actor,
                        tenant: e.tenant,
                        action: e.action,
                        target: e.target,
                        detail: e.detail,
                    })
                    .collect(),
            })
        })
        .await
    }
}
