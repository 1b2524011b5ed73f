//! `confidant.v1.AssistService`: a bidirectional stream per conversation. The first
//! message starts the session (tenant, conversation); each turn gets one update back, in
//! order. A bad message ends the stream with INVALID_ARGUMENT naming the field.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use confidant_proto::v1 as pb;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::ServiceError;
use crate::app::App;
use crate::assist::{Kind, Session, Suggestion};
use crate::auth::{self, Role};

pub struct AssistService {
    app: Arc<App>,
}

impl AssistService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn to_pb(s: Suggestion) -> pb::AssistSuggestion {
    use pb::assist_suggestion::Kind as K;
    let kind = match s.kind {
        Kind::Article {
            article_id,
            version,
            title,
            answer,
            confidence,
        } => K::Article(pb::ArticleSuggestion {
            article_id,
            version,
            title,
            answer,
            confidence,
        }),
        Kind::Checklist { intent, items } => K::Checklist(pb::Checklist {
            intent,
            items: items
                .into_iter()
                .map(|i| pb::ChecklistItem {
                    id: i.id,
                    label: i.label,
                    done: i.done_at.is_some(),
                    done_at_turn: i.done_at.map(|t| t as i32).unwrap_or(-1),
                })
                .collect(),
        }),
        Kind::Warning {
            kind,
            rule,
            message,
            evidence,
        } => K::Warning(pb::ComplianceWarning {
            kind: kind.into(),
            rule,
            message,
            evidence,
        }),
        Kind::Sentiment { previous, current } => {
            K::Sentiment(pb::SentimentAlert { previous, current })
        }
    };
    pb::AssistSuggestion {
        kind: Some(kind),
        reason: s.reason,
    }
}

type Updates = Pin<Box<dyn Stream<Item = Result<pb::AssistUpdate, Status>> + Send>>;

fn count(code: tonic::Code) {
    metrics::counter!("confidant_rpc_calls_total", "method" => "Assist", "code" => format!("{code:?}"))
        .increment(1);
}

async fn run(
    app: Arc<App>,
    who: auth::Identity,
    mut inbound: Streaming<pb::AssistRequest>,
    tx: tokio::sync::mpsc::Sender<Result<pb::AssistUpdate, Status>>,
) -> Result<(), ServiceError> {
    let first = match inbound.next().await {
        Some(Ok(m)) => m,
        Some(Err(_)) | None => return Ok(()),
    };
    let Some(pb::assist_request::Event::Start(start)) = first.event else {
        return Err(ServiceError::invalid(
            "start",
            "the first message of the stream must be start",
        ));
    };
    let tenant = who
        .scope(&start.tenant)?
        .ok_or_else(|| ServiceError::invalid("start.tenant", "required on the local socket"))?;
    let mut session = Session::start(
        &app,
        tenant,
        start.conversation_id,
        start.lang,
        start.channel,
    )?;
    while let Some(msg) = inbound.next().await {
        let Ok(msg) = msg else { return Ok(()) };
        let turn = match msg.event {
            Some(pb::assist_request::Event::Turn(t)) => t,
            Some(pb::assist_request::Event::Start(_)) => {
                return Err(ServiceError::invalid("start", "sent twice"));
            }
            None => return Err(ServiceError::invalid("event", "empty message")),
        };
        let started = Instant::now();
        let index = session.turns();
        let suggestions = session
            .turn(&app, &turn.speaker, &turn.text, turn.at_ms)
            .await?;
        metrics::histogram!("confidant_assist_turn_seconds", "speaker" => if turn.speaker == "agent" { "agent" } else { "customer" })
            .record(started.elapsed().as_secs_f64());
        let update = pb::AssistUpdate {
            turn_index: index,
            suggestions: suggestions.into_iter().map(to_pb).collect(),
        };
        if tx.send(Ok(update)).await.is_err() {
            // The desk hung up.
            return Ok(());
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::assist_service_server::AssistService for AssistService {
    type AssistStream = Updates;

    async fn assist(
        &self,
        request: Request<Streaming<pb::AssistRequest>>,
    ) -> Result<Response<Self::AssistStream>, Status> {
        let who = match auth::identity(&request) {
            Ok(w) => w,
            Err(e) => {
                let s: Status = ServiceError::from(e).into();
                count(s.code());
                return Err(s);
            }
        };
        if let Err(e) = who.require_any(&[Role::Assist, Role::Admin]) {
            let s: Status = ServiceError::from(e).into();
            count(s.code());
            return Err(s);
        }
        let inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let app = self.app.clone();
        tokio::spawn(async move {
            let result = run(app, who, inbound, tx.clone()).await;
            match result {
                Ok(()) => count(tonic::Code::Ok),
                Err(e) => {
                    let s: Status = e.into();
                    count(s.code());
                    let _ = tx.send(Err(s)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
