//! `confidant.v1.BotService` and `confidant.v1.RoutingService`: scope to the caller's
//! tenant, check the role, delegate to `bot` and `routing`, translate.

use std::sync::Arc;

use confidant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::observe::observed;
use super::{ServiceError, scoped};
use crate::app::App;
use crate::auth::Role;
use crate::bot::{self, AnswerInput, Customer, Handoff, IntentGuess, Outcome};
use crate::routing::{self, Priority, RouteInput};

const MAX_SUGGESTIONS: u32 = 20;

fn customer(c: Option<pb::CustomerAttributes>) -> Customer {
    let c = c.unwrap_or_default();
    Customer {
        customer_id: c.customer_id,
        tier: c.tier,
        waited_seconds: c.waited_seconds,
    }
}

fn factors(p: &Priority) -> Vec<pb::PriorityFactor> {
    p.factors
        .iter()
        .map(|f| pb::PriorityFactor {
            name: f.name.into(),
            points: f.points,
            detail: f.detail.clone(),
        })
        .collect()
}

fn handoff(h: Handoff) -> pb::Handoff {
    pb::Handoff {
        factors: factors(&h.priority),
        reason: h.reason,
        queue: h.queue,
        priority: h.priority.value,
    }
}

fn intent(i: IntentGuess) -> pb::IntentGuess {
    pb::IntentGuess {
        label: i.label,
        probability: i.probability,
        out_of_scope: i.out_of_scope,
    }
}

pub struct BotService {
    app: Arc<App>,
}

impl BotService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl pb::bot_service_server::BotService for BotService {
    async fn answer(
        &self,
        request: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerResponse>, Status> {
        observed("Answer", async {
            let tenant = scoped(
                &request,
                &[Role::Bot, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            let out = bot::answer(
                &self.app,
                AnswerInput {
                    tenant,
                    conversation_id: r.conversation_id,
                    text: r.text,
                    lang: r.lang,
                    channel: r.channel,
                    customer: customer(r.customer),
                    selected_article_id: r.selected_article_id,
                },
            )
            .await?;
            Ok(pb::AnswerResponse {
                decision_id: out.decision_id,
                outcome: match out.outcome {
                    Outcome::Answer => pb::Outcome::Answer,
                    Outcome::Clarify => pb::Outcome::Clarify,
                    Outcome::NoMatch => pb::Outcome::NoMatch,
                    Outcome::Handoff => pb::Outcome::Handoff,
                } as i32,
                answer: out.answer.map(|a| pb::CuratedAnswer {
                    article_id: a.article_id,
                    article_version: a.version,
                    title: a.title,
                    text: a.text,
                    confidence: a.confidence,
                    matched_text: a.matched_text,
                }),
                choices: out
                    .choices
                    .into_iter()
                    .map(|c| pb::Choice {
                        article_id: c.article_id,
                        title: c.title,
                        question: c.question,
                        confidence: c.confidence,
                    })
                    .collect(),
                handoff: out.handoff.map(handoff),
                intent: out.intent.map(intent),
                lang: out.lang,
                explanation: out.explanation,
                used_context: out.used_context,
            })
        })
        .await
    }

    async fn suggest(
        &self,
        request: Request<pb::SuggestRequest>,
    ) -> Result<Response<pb::SuggestResponse>, Status> {
        observed("Suggest", async {
            let tenant = scoped(
                &request,
                &[Role::Bot, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            if r.limit > MAX_SUGGESTIONS {
                return Err(ServiceError::invalid(
                    "limit",
                    format!("at most {MAX_SUGGESTIONS}"),
                ));
            }
            let max = self.app.config().limits.max_text_chars;
            if r.prefix.chars().count() > max {
                return Err(ServiceError::invalid(
                    "prefix",
                    format!("longer than {max} characters"),
                ));
            }
            let limit = if r.limit == 0 { 5 } else { r.limit as usize };
            let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let found = self
                .app
                .suggester()
                .suggest(
                    self.app.kb(),
                    &tenant,
                    &r.prefix,
                    opt(&r.lang).as_deref(),
                    opt(&r.channel).as_deref(),
                    limit,
                )
                .await?;
            Ok(pb::SuggestResponse {
                suggestions: found
                    .into_iter()
                    .map(|e| pb::Suggestion {
                        article_id: e.article_id,
                        question: e.question,
                        title: e.title,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn feedback(
        &self,
        request: Request<pb::FeedbackRequest>,
    ) -> Result<Response<pb::FeedbackResponse>, Status> {
        observed("Feedback", async {
            let tenant = scoped(
                &request,
                &[Role::Bot, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            let h = bot::feedback(
                &self.app,
                &tenant,
                &r.conversation_id,
                &r.decision_id,
                r.resolved,
            )
            .await?;
            Ok(pb::FeedbackResponse {
                handoff: h.map(handoff),
            })
        })
        .await
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        observed("Report", async {
            let tenant = scoped(
                &request,
                &[Role::Qa, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = self
                .app
                .store()
                .report(&tenant, request.get_ref().since_ms)
                .await?;
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            Ok(pb::ReportResponse {
                conversations: r.conversations,
                answered: r.answered,
                handed_off: r.handed_off,
                handoffs_by_reason: r
                    .handoffs_by_reason
                    .into_iter()
                    .map(|(name, count)| pb::CountByName { name, count })
                    .collect(),
                resolved: r.resolved,
                automated_resolution_rate: ratio(r.resolved, r.conversations),
                feedback_resolved: r.feedback_resolved,
                feedback_unresolved: r.feedback_unresolved,
                routed: r.routed,
                routed_with_outcome: r.routed_with_outcome,
                routed_first_try: r.routed_first_try,
                first_try_routing_accuracy: ratio(r.routed_first_try, r.routed_with_outcome),
            })
        })
        .await
    }
}

pub struct RoutingService {
    app: Arc<App>,
}

impl RoutingService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl pb::routing_service_server::RoutingService for RoutingService {
    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteResponse>, Status> {
        observed("Route", async {
            let tenant = scoped(
                &request,
                &[Role::Bot, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            let out = routing::advise(
                &self.app,
                RouteInput {
                    tenant,
                    contact_id: r.contact_id,
                    text: r.text,
                    lang: r.lang,
                    customer: customer(r.customer),
                },
            )
            .await?;
            Ok(pb::RouteResponse {
                intent: out.intent.map(intent),
                queue: out.queue,
                queue_reason: out.queue_reason,
                priority: out.priority.value,
                factors: factors(&out.priority),
                risk: out.risk,
            })
        })
        .await
    }

    async fn route_outcome(
        &self,
        request: Request<pb::RouteOutcomeRequest>,
    ) -> Result<Response<pb::RouteOutcomeResponse>, Status> {
        observed("RouteOutcome", async {
            let tenant = scoped(
                &request,
                &[Role::Bot, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            let first_try =
                routing::outcome(&self.app, &tenant, &r.contact_id, &r.handled_queue).await?;
            Ok(pb::RouteOutcomeResponse { first_try })
        })
        .await
    }
}
