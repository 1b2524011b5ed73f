//! `confidant.v1.KnowledgeBaseService`: validates, scopes to the caller's tenant,
//! delegates to `kb`, translates.

use std::pin::Pin;
use std::sync::Arc;

use confidant_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::observe::observed;
use crate::app::App;
use crate::auth::{self, Identity, Role};
use crate::index::{VALID_FROM_OPEN, VALID_UNTIL_OPEN};
use crate::kb::{Mode, SearchParams, SearchResult};
use crate::store::ArticleRow;

pub struct KbService {
    app: Arc<App>,
}

impl KbService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// The tenant a KB call acts on: a token's own; the local operator must name one.
fn tenant(who: &Identity, requested: &str) -> Result<String, ServiceError> {
    who.scope(requested)?.ok_or_else(|| {
        ServiceError::invalid(
            "tenant",
            "required on the local socket (e.g. --tenant bank1)",
        )
    })
}

fn editor<T>(req: &Request<T>) -> Result<Identity, ServiceError> {
    let who = auth::identity(req)?;
    who.require_any(&[Role::KbEditor, Role::Admin])?;
    Ok(who)
}

fn to_row(a: pb::Article) -> ArticleRow {
    ArticleRow {
        id: a.id,
        title: a.title,
        questions: a.questions,
        answer: a.answer,
        body: a.body,
        lang: a.lang,
        tags: a.tags,
        channels: a.channels,
        valid_from: a.valid_from_ms,
        valid_until: a.valid_until_ms,
        status: a.status,
        ..Default::default()
    }
}

pub(crate) fn to_pb(a: ArticleRow) -> pb::Article {
    pb::Article {
        id: a.id,
        title: a.title,
        questions: a.questions,
        answer: a.answer,
        body: a.body,
        lang: a.lang,
        tags: a.tags,
        channels: a.channels,
        // Open ends go back out as 0, so an export re-imports to the same content.
        valid_from_ms: if a.valid_from == VALID_FROM_OPEN {
            0
        } else {
            a.valid_from
        },
        valid_until_ms: if a.valid_until == VALID_UNTIL_OPEN {
            0
        } else {
            a.valid_until
        },
        status: a.status,
        version: a.version,
        updated_at_ms: a.updated_at,
    }
}

fn hit(rank: usize, r: SearchResult) -> pb::SearchHit {
    pb::SearchHit {
        article_id: r.article.id,
        version: r.article.version,
        title: r.article.title,
        answer: r.article.answer,
        lang: r.article.lang,
        rank: rank as u32 + 1,
        fused_score: r.hit.fused,
        dense_score: r.hit.dense.map(|s| s.score).unwrap_or(0.0),
        dense_rank: r.hit.dense.map(|s| s.rank).unwrap_or(0),
        lexical_score: r.hit.lexical.map(|s| s.score).unwrap_or(0.0),
        lexical_rank: r.hit.lexical.map(|s| s.rank).unwrap_or(0),
        matched_kind: r.matched.kind.as_str().into(),
        matched_text: r.matched.text,
    }
}

fn optional(s: String) -> Option<String> {
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

type ArticleStream = Pin<Box<dyn Stream<Item = Result<pb::Article, Status>> + Send>>;

#[tonic::async_trait]
impl pb::knowledge_base_service_server::KnowledgeBaseService for KbService {
    async fn upsert_articles(
        &self,
        request: Request<pb::UpsertArticlesRequest>,
    ) -> Result<Response<pb::UpsertArticlesResponse>, Status> {
        observed("UpsertArticles", async {
            let who = editor(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            if req.articles.is_empty() {
                return Err(ServiceError::invalid("articles", "at least one article"));
            }
            let rows: Vec<ArticleRow> = req.articles.into_iter().map(to_row).collect();
            let kb = self.app.kb();
            if req.dry_run {
                let (ok, problems) = kb.validate(rows);
                return Ok(pb::UpsertArticlesResponse {
                    results: ok
                        .into_iter()
                        .map(|a| pb::UpsertResult {
                            id: a.id,
                            version: 0,
                            outcome: "valid".into(),
                        })
                        .collect(),
                    problems: problems
                        .into_iter()
                        .map(|p| pb::ArticleProblem {
                            index: p.index as u32,
                            field: p.field,
                            message: p.message,
                        })
                        .collect(),
                });
            }
            let done = kb.upsert(&tenant, rows).await?;
            let changed: Vec<&str> = done
                .iter()
                .filter(|u| u.outcome != "unchanged")
                .map(|u| u.id.as_str())
                .collect();
            if !changed.is_empty() {
                let detail = format!("{} articles written", changed.len());
                let target = changed.join(",");
                let target: String = target.chars().take(1000).collect();
                self.app
                    .store()
                    .audit(&who.actor, &tenant, "kb.upsert", &target, &detail)
                    .await?;
            }
            Ok(pb::UpsertArticlesResponse {
                results: done
                    .into_iter()
                    .map(|u| pb::UpsertResult {
                        id: u.id,
                        version: u.version,
                        outcome: u.outcome.into(),
                    })
                    .collect(),
                problems: Vec::new(),
            })
        })
        .await
    }

    async fn get_article(
        &self,
        request: Request<pb::GetArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        observed("GetArticle", async {
            let who = auth::identity(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            Ok(to_pb(self.app.kb().get(&tenant, &req.id).await?))
        })
        .await
    }

    async fn list_articles(
        &self,
        request: Request<pb::ListArticlesRequest>,
    ) -> Result<Response<pb::ListArticlesResponse>, Status> {
        observed("ListArticles", async {
            let who = auth::identity(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            let limit = match req.limit {
                0 => 100,
                n if n <= 1000 => n as usize,
                _ => return Err(ServiceError::invalid("limit", "at most 1000")),
            };
            let status = optional(req.status);
            if let Some(s) = &status
                && s != "published"
                && s != "draft"
            {
                return Err(ServiceError::invalid(
                    "status",
                    "expected \"published\" or \"draft\"",
                ));
            }
            let lang = optional(req.lang);
            let rows = self
                .app
                .kb()
                .list(
                    &tenant,
                    lang.as_deref(),
                    status.as_deref(),
                    &req.after_id,
                    limit,
                )
                .await?;
            let next_after_id = if rows.len() == limit {
                rows.last().map(|a| a.id.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(pb::ListArticlesResponse {
                articles: rows.into_iter().map(to_pb).collect(),
                next_after_id,
            })
        })
        .await
    }

    async fn delete_article(
        &self,
        request: Request<pb::DeleteArticleRequest>,
    ) -> Result<Response<pb::DeleteArticleResponse>, Status> {
        observed("DeleteArticle", async {
            let who = editor(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            self.app.kb().delete(&tenant, &req.id).await?;
            self.app
                .store()
                .audit(&who.actor, &tenant, "kb.delete", &req.id, "")
                .await?;
            Ok(pb::DeleteArticleResponse {})
        })
        .await
    }

    type ExportArticlesStream = ArticleStream;

    async fn export_articles(
        &self,
        request: Request<pb::ExportArticlesRequest>,
    ) -> Result<Response<ArticleStream>, Status> {
        let who = editor(&request).map_err(Status::from)?;
        let req = request.into_inner();
        let tenant = tenant(&who, &req.tenant).map_err(Status::from)?;
        self.app
            .store()
            .audit(&who.actor, &tenant, "kb.export", "", "")
            .await
            .map_err(|e| Status::from(ServiceError::from(e)))?;
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Pages of the database, streamed as they come; a client that goes away stops it.
        tokio::spawn(async move {
            let mut after = String::new();
            loop {
                let page = match app.kb().list(&tenant, None, None, &after, 500).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ServiceError::from(e)))).await;
                        return;
                    }
                };
                let Some(last) = page.last().map(|a| a.id.clone()) else {
                    return;
                };
                for a in page {
                    if tx.send(Ok(to_pb(a))).await.is_err() {
                        return;
                    }
                }
                after = last;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        observed("Search", async {
            let who = auth::identity(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            let limits = self.app.config().limits.clone();
            let n = req.text.chars().count();
            if n > limits.max_text_chars {
                return Err(ServiceError::invalid(
                    "text",
                    format!(
                        "{n} characters exceed the limit of {}",
                        limits.max_text_chars
                    ),
                ));
            }
            let mode = match pb::SearchMode::try_from(req.mode) {
                Ok(pb::SearchMode::Hybrid) => Mode::Hybrid,
                Ok(pb::SearchMode::Dense) => Mode::Dense,
                Ok(pb::SearchMode::Lexical) => Mode::Lexical,
                Err(_) => {
                    return Err(ServiceError::invalid(
                        "mode",
                        format!("unknown mode {}", req.mode),
                    ));
                }
            };
            let params = SearchParams {
                tenant,
                text: req.text,
                lang: optional(req.lang),
                channel: optional(req.channel),
                limit: if req.limit == 0 {
                    5
                } else {
                    req.limit as usize
                },
                mode,
                at_ms: req.at_ms,
            };
            let results = self.app.kb().search(&params).await?;
            Ok(pb::SearchResponse {
                hits: results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| hit(i, r))
                    .collect(),
            })
        })
        .await
    }

    async fn reindex(
        &self,
        request: Request<pb::ReindexRequest>,
    ) -> Result<Response<pb::ReindexResponse>, Status> {
        observed("Reindex", async {
            let who = editor(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            let (articles, chunks) = self.app.kb().reindex_tenant(&tenant).await?;
            self.app
                .store()
                .audit(
                    &who.actor,
                    &tenant,
                    "kb.reindex",
                    "",
                    &format!("{articles} articles, {chunks} chunks"),
                )
                .await?;
            Ok(pb::ReindexResponse { articles, chunks })
        })
        .await
    }

    async fn stats(
        &self,
        request: Request<pb::KbStatsRequest>,
    ) -> Result<Response<pb::KbStatsResponse>, Status> {
        observed("KbStats", async {
            let who = auth::identity(&request)?;
            let req = request.into_inner();
            let tenant = tenant(&who, &req.tenant)?;
            let (published, drafts, indexed_chunks) = self.app.kb().counts(&tenant).await?;
            Ok(pb::KbStatsResponse {
                published,
                drafts,
                indexed_chunks,
                index_pending: self.app.kb().pending(),
            })
        })
        .await
    }
}
