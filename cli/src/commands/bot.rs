//! `confidantctl bot`, `route`, `report` and `purge`: the bot and routing jobs as a
//! contact-center front end calls them, their report, and erasure of a customer's data.

use clap::{Args, Subcommand};
use confidant_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::bot_service_client::BotServiceClient;
use pb::routing_service_client::RoutingServiceClient;
use serde_json::json;

use crate::output::{json, table};
use crate::{Cli, client};

#[derive(Args)]
pub struct BotArgs {
    /// The tenant (required on the local socket; a token implies its own).
    #[arg(long, global = true, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    #[command(subcommand)]
    command: BotCommand,
}

#[derive(Args, Clone, Default)]
struct CustomerArgs {
    /// The site's customer id (stored, so `purge --customer` can erase it).
    #[arg(long, default_value = "")]
    customer: String,
    /// Customer tier, a key of routing.tier_points (e.g. gold).
    #[arg(long, default_value = "")]
    tier: String,
    /// Seconds the customer has waited so far.
    #[arg(long, default_value_t = 0)]
    waited: u32,
}

impl CustomerArgs {
    fn to_pb(&self) -> pb::CustomerAttributes {
        pb::CustomerAttributes {
            customer_id: self.customer.clone(),
            tier: self.tier.clone(),
            waited_seconds: self.waited,
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum BotCommand {
    /// One customer turn: the bot's answer, choices, or hand-off.
    Answer {
        /// The conversation id (a new one starts a conversation).
        #[arg(long)]
        conversation: String,
        text: String,
        #[arg(long, default_value = "")]
        lang: String,
        #[arg(long, default_value = "")]
        channel: String,
        /// Answer this article (the customer picked it from the choices).
        #[arg(long, default_value = "")]
        select: String,
        #[command(flatten)]
        customer: CustomerArgs,
    },
    /// Type-ahead: knowledge-base questions matching a prefix.
    Suggest {
        prefix: String,
        #[arg(long, default_value = "")]
        lang: String,
        #[arg(long, default_value = "")]
        channel: String,
        #[arg(long, default_value_t = 5)]
        limit: u32,
    },
    /// "Did that solve it?" for one answer.
    Feedback {
        #[arg(long)]
        conversation: String,
        #[arg(long)]
        decision: String,
        /// The answer solved it (the default: it did not).
        #[arg(long)]
        resolved: bool,
    },
}

#[derive(Args)]
pub struct RouteArgs {
    #[arg(long, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Queue and priority for a new contact's first message.
    Advise {
        #[arg(long)]
        contact: String,
        text: String,
        #[arg(long, default_value = "")]
        lang: String,
        #[command(flatten)]
        customer: CustomerArgs,
    },
    /// Record where a contact was finally handled (first-try routing accuracy).
    Outcome {
        #[arg(long)]
        contact: String,
        #[arg(long)]
        queue: String,
    },
}

#[derive(Args)]
pub struct ReportArgs {
    #[arg(long, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    /// Only conversations and contacts of the last this many hours (0: all).
    #[arg(long, default_value_t = 0)]
    hours: u64,
}

#[derive(Args)]
pub struct PurgeArgs {
    #[arg(long, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    /// Erase everything stored about this customer id.
    #[arg(long)]
    customer: String,
}

fn handoff_json(h: &pb::Handoff) -> serde_json::Value {
    json!({
        "reason": h.reason, "queue": h.queue, "priority": h.priority,
        "factors": h.factors.iter().map(|f| json!({"name": f.name, "points": f.points, "detail": f.detail})).collect::<Vec<_>>(),
    })
}

fn factors_text(f: &[pb::PriorityFactor]) -> String {
    f.iter()
        .map(|f| format!("{} {:+} ({})", f.name, f.points, f.detail))
        .collect::<Vec<_>>()
        .join(", ")
}

fn intent_text(i: &pb::IntentGuess) -> String {
    if i.out_of_scope || i.label.is_empty() {
        "none (out of scope)".into()
    } else {
        format!("{} ({:.2})", i.label, i.probability)
    }
}

fn outcome_name(o: i32) -> &'static str {
    match pb::Outcome::try_from(o) {
        Ok(pb::Outcome::Answer) => "answer",
        Ok(pb::Outcome::Clarify) => "clarify",
        Ok(pb::Outcome::NoMatch) => "no_match",
        Ok(pb::Outcome::Handoff) => "handoff",
        _ => "unspecified",
    }
}

fn print_answer(cli: &Cli, r: &pb::AnswerResponse) {
    let outcome = outcome_name(r.outcome);
    if cli.json {
        json(&json!({
            "decision_id": r.decision_id,
            "outcome": outcome,
            "lang": r.lang,
            "answer": r.answer.as_ref().map(|a| json!({
                "article_id": a.article_id, "article_version": a.article_version,
                "title": a.title, "text": a.text, "confidence": a.confidence,
                "matched_text": a.matched_text,
            })),
            "choices": r.choices.iter().map(|c| json!({
                "article_id": c.article_id, "title": c.title, "question": c.question,
                "confidence": c.confidence,
            })).collect::<Vec<_>>(),
            "handoff": r.handoff.as_ref().map(handoff_json),
            "intent": r.intent.as_ref().map(|i| json!({
                "label": i.label, "probability": i.probability, "out_of_scope": i.out_of_scope,
            })),
            "explanation": r.explanation,
            "used_context": r.used_context,
        }));
        return;
    }
    println!("decision:    {} ({outcome})", r.decision_id);
    if let Some(a) = &r.answer {
        println!(
            "answer:      [{} v{}, {:.3}] {}",
            a.article_id, a.article_version, a.confidence, a.text
        );
    }
    for c in &r.choices {
        println!(
            "did you mean: [{} {:.3}] {}",
            c.article_id, c.confidence, c.question
        );
    }
    if let Some(h) = &r.handoff {
        println!(
            "hand-off:    {} → queue {} priority {} ({})",
            h.reason,
            h.queue,
            h.priority,
            factors_text(&h.factors)
        );
    }
    if let Some(i) = &r.intent {
        println!("intent:      {}", intent_text(i));
    }
    println!("why:         {}", r.explanation);
}

pub async fn run(cli: &Cli, args: &BotArgs) -> anyhow::Result<()> {
    let mut c = BotServiceClient::new(client::connect(cli).await?);
    let tenant = args.tenant.clone();
    match &args.command {
        BotCommand::Answer {
            conversation,
            text,
            lang,
            channel,
            select,
            customer,
        } => {
            let r = c
                .answer(pb::AnswerRequest {
                    tenant,
                    conversation_id: conversation.clone(),
                    text: text.clone(),
                    lang: lang.clone(),
                    channel: channel.clone(),
                    customer: Some(customer.to_pb()),
                    selected_article_id: select.clone(),
                })
                .await?
                .into_inner();
            print_answer(cli, &r);
        }
        BotCommand::Suggest {
            prefix,
            lang,
            channel,
            limit,
        } => {
            let r = c
                .suggest(pb::SuggestRequest {
                    tenant,
                    prefix: prefix.clone(),
                    lang: lang.clone(),
                    channel: channel.clone(),
                    limit: *limit,
                })
                .await?
                .into_inner();
            if cli.json {
                json(&json!(
                    r.suggestions
                        .iter()
                        .map(|s| json!({"article_id": s.article_id, "question": s.question, "title": s.title}))
                        .collect::<Vec<_>>()
                ));
            } else {
                let rows: Vec<Vec<String>> = r
                    .suggestions
                    .iter()
                    .map(|s| vec![s.question.clone(), s.article_id.clone()])
                    .collect();
                table(&["question", "article"], &rows);
            }
        }
        BotCommand::Feedback {
            conversation,
            decision,
            resolved,
        } => {
            let r = c
                .feedback(pb::FeedbackRequest {
                    tenant,
                    conversation_id: conversation.clone(),
                    decision_id: decision.clone(),
                    resolved: *resolved,
                })
                .await?
                .into_inner();
            if cli.json {
                json(&json!({"handoff": r.handoff.as_ref().map(handoff_json)}));
            } else if let Some(h) = &r.handoff {
                println!(
                    "recorded; hand-off: {} → queue {} priority {}",
                    h.reason, h.queue, h.priority
                );
            } else {
                println!("recorded");
            }
        }
    }
    Ok(())
}

pub async fn route(cli: &Cli, args: &RouteArgs) -> anyhow::Result<()> {
    let mut c = RoutingServiceClient::new(client::connect(cli).await?);
    let tenant = args.tenant.clone();
    match &args.command {
        RouteCommand::Advise {
            contact,
            text,
            lang,
            customer,
        } => {
            let r = c
                .route(pb::RouteRequest {
                    tenant,
                    contact_id: contact.clone(),
                    text: text.clone(),
                    lang: lang.clone(),
                    customer: Some(customer.to_pb()),
                })
                .await?
                .into_inner();
            let intent = r.intent.as_ref();
            if cli.json {
                json(&json!({
                    "queue": r.queue, "queue_reason": r.queue_reason, "priority": r.priority,
                    "risk": r.risk,
                    "intent": intent.map(|i| json!({"label": i.label, "probability": i.probability, "out_of_scope": i.out_of_scope})),
                    "factors": r.factors.iter().map(|f| json!({"name": f.name, "points": f.points, "detail": f.detail})).collect::<Vec<_>>(),
                }));
            } else {
                println!("queue:    {} ({})", r.queue, r.queue_reason);
                println!("priority: {} ({})", r.priority, factors_text(&r.factors));
                if !r.risk.is_empty() {
                    println!("risk:     {}", r.risk);
                }
                if let Some(i) = intent {
                    println!("intent:   {}", intent_text(i));
                }
            }
        }
        RouteCommand::Outcome { contact, queue } => {
            let r = c
                .route_outcome(pb::RouteOutcomeRequest {
                    tenant,
                    contact_id: contact.clone(),
                    handled_queue: queue.clone(),
                })
                .await?
                .into_inner();
            if cli.json {
                json(&json!({"first_try": r.first_try}));
            } else {
                println!(
                    "recorded: {}",
                    if r.first_try {
                        "routed right first time"
                    } else {
                        "re-routed"
                    }
                );
            }
        }
    }
    Ok(())
}

pub async fn report(cli: &Cli, args: &ReportArgs) -> anyhow::Result<()> {
    let mut c = BotServiceClient::new(client::connect(cli).await?);
    let since_ms = if args.hours == 0 {
        0
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now - (args.hours as i64) * 3_600_000
    };
    let r = c
        .report(pb::ReportRequest {
            tenant: args.tenant.clone(),
            since_ms,
        })
        .await?
        .into_inner();
    if cli.json {
        json(&json!({
            "conversations": r.conversations, "answered": r.answered,
            "handed_off": r.handed_off, "resolved": r.resolved,
            "automated_resolution_rate": r.automated_resolution_rate,
            "feedback_resolved": r.feedback_resolved, "feedback_unresolved": r.feedback_unresolved,
            "handoffs_by_reason": r.handoffs_by_reason.iter().map(|c| (c.name.clone(), c.count)).collect::<std::collections::BTreeMap<_, _>>(),
            "routed": r.routed, "routed_with_outcome": r.routed_with_outcome,
            "routed_first_try": r.routed_first_try,
            "first_try_routing_accuracy": r.first_try_routing_accuracy,
        }));
        return Ok(());
    }
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let mut rows = vec![
        vec!["conversations".into(), r.conversations.to_string()],
        vec!["answered by the bot".into(), r.answered.to_string()],
        vec!["resolved by the bot".into(), r.resolved.to_string()],
        vec![
            "automated resolution rate (ROAR)".into(),
            pct(r.automated_resolution_rate),
        ],
        vec!["handed off".into(), r.handed_off.to_string()],
    ];
    for h in &r.handoffs_by_reason {
        rows.push(vec![format!("  hand-off: {}", h.name), h.count.to_string()]);
    }
    rows.extend([
        vec![
            "feedback: solved / not solved".into(),
            format!("{} / {}", r.feedback_resolved, r.feedback_unresolved),
        ],
        vec!["contacts routed".into(), r.routed.to_string()],
        vec![
            "  with a known outcome".into(),
            r.routed_with_outcome.to_string(),
        ],
        vec![
            "first-try routing accuracy".into(),
            format!(
                "{} ({} of {})",
                pct(r.first_try_routing_accuracy),
                r.routed_first_try,
                r.routed_with_outcome
            ),
        ],
    ]);
    table(&["measure", "value"], &rows);
    Ok(())
}

pub async fn purge(cli: &Cli, args: &PurgeArgs) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(client::connect(cli).await?);
    let r = c
        .erase_customer(pb::EraseCustomerRequest {
            tenant: args.tenant.clone(),
            customer_id: args.customer.clone(),
        })
        .await?
        .into_inner();
    if cli.json {
        json(&json!({
            "conversations": r.conversations, "turns": r.turns,
            "decisions": r.decisions, "routes": r.routes, "qa_results": r.qa_results,
        }));
    } else {
        println!(
            "erased: {} conversations ({} turns, {} decisions), {} routing records, {} QA results",
            r.conversations, r.turns, r.decisions, r.routes, r.qa_results
        );
    }
    Ok(())
}
