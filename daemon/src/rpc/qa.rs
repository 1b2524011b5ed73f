//! `confidant.v1.QaService`: scores a transcript against the caller's tenant's rubric.

use std::sync::Arc;

use confidant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::observe::observed;
use super::scoped;
use crate::app::App;
use crate::auth::Role;
use crate::qa::{self, Contact, Turn};

pub struct QaService {
    app: Arc<App>,
}

impl QaService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl pb::qa_service_server::QaService for QaService {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        observed("Score", async {
            let tenant = scoped(
                &request,
                &[Role::Qa, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            let turns: Vec<Turn> = r
                .turns
                .into_iter()
                .map(|t| Turn {
                    speaker: t.speaker,
                    text: t.text,
                    at_ms: t.at_ms,
                })
                .collect();
            let contact = Contact {
                conversation_id: r.conversation_id,
                customer_id: r.customer_id,
                agent_id: r.agent_id,
                team: r.team,
            };
            let s = qa::score(&self.app, &tenant, &contact, &turns).await?;
            Ok(pb::ScoreResponse {
                rubric: s.rubric,
                total: s.total,
                critical_failed: s.critical_failed,
                rules: s
                    .rules
                    .into_iter()
                    .map(|o| pb::RuleResult {
                        id: o.id,
                        kind: o.kind.as_str().into(),
                        weight: o.weight,
                        critical: o.critical,
                        outcome: o.outcome.into(),
                        evidence: o
                            .evidence
                            .into_iter()
                            .map(|e| pb::Evidence {
                                turn_index: e.turn,
                                text: e.text,
                                similarity: e.similarity,
                            })
                            .collect(),
                        detail: o.detail,
                    })
                    .collect(),
                alerts: s.alerts,
            })
        })
        .await
    }

    async fn report(
        &self,
        request: Request<pb::QaReportRequest>,
    ) -> Result<Response<pb::QaReportResponse>, Status> {
        observed("QaReport", async {
            let tenant = scoped(
                &request,
                &[Role::Qa, Role::Admin],
                &request.get_ref().tenant,
            )?;
            let r = request.into_inner();
            let rep = self.app.store().qa_report(&tenant, r.since_ms).await?;
            let group = |g: crate::store::QaGroup| pb::QaGroup {
                name: g.name,
                contacts: g.contacts,
                mean_total: g.mean_total,
                critical_failed: g.critical_failed,
            };
            Ok(pb::QaReportResponse {
                contacts: rep.contacts,
                by_agent: rep.by_agent.into_iter().map(group).collect(),
                by_team: rep.by_team.into_iter().map(group).collect(),
                by_rule: rep
                    .by_rule
                    .into_iter()
                    .map(|(id, (failed, applicable))| pb::QaRuleSummary {
                        id,
                        failed,
                        applicable,
                    })
                    .collect(),
            })
        })
        .await
    }
}
