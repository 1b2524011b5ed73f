//! `confidantctl assist FILE.jsonl`: plays a transcript through the daemon's
//! agent-assist stream as an agent desktop would, turn by turn, and prints what the agent
//! would have been shown. Lines: {"speaker": "customer"|"agent", "text": "…", "at_ms": 0}.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use confidant_proto::v1 as pb;
use pb::assist_service_client::AssistServiceClient;
use serde::Deserialize;
use serde_json::json;

use crate::output::json;
use crate::{Cli, client};

#[derive(Args)]
pub struct AssistArgs {
    #[arg(long, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    #[arg(long, default_value = "replay")]
    conversation: String,
    #[arg(long, default_value = "")]
    lang: String,
    /// The transcript (JSON lines).
    transcript: PathBuf,
}

#[derive(Deserialize)]
struct Line {
    speaker: String,
    text: String,
    #[serde(default)]
    at_ms: i64,
}

fn describe(s: &pb::AssistSuggestion) -> (String, serde_json::Value) {
    use pb::assist_suggestion::Kind as K;
    match &s.kind {
        Some(K::Article(a)) => (
            format!(
                "article   [{} {:.2}] {}",
                a.article_id, a.confidence, a.title
            ),
            json!({"article": {"article_id": a.article_id, "version": a.version, "title": a.title, "answer": a.answer, "confidence": a.confidence}}),
        ),
        Some(K::Checklist(c)) => (
            format!(
                "checklist {}: {}",
                c.intent,
                c.items
                    .iter()
                    .map(|i| format!("[{}] {}", if i.done { "x" } else { " " }, i.label))
                    .collect::<Vec<_>>()
                    .join("  ")
            ),
            json!({"checklist": {"intent": c.intent, "items": c.items.iter().map(|i| json!({"id": i.id, "label": i.label, "done": i.done, "done_at_turn": i.done_at_turn})).collect::<Vec<_>>()}}),
        ),
        Some(K::Warning(w)) => (
            format!("WARNING   {} ({}): {}", w.rule, w.kind, w.message),
            json!({"warning": {"kind": w.kind, "rule": w.rule, "message": w.message, "evidence": w.evidence}}),
        ),
        Some(K::Sentiment(a)) => (
            format!("SENTIMENT negative {:.2} → {:.2}", a.previous, a.current),
            json!({"sentiment": {"previous": a.previous, "current": a.current}}),
        ),
        None => (String::new(), json!({})),
    }
}

pub async fn replay(cli: &Cli, a: &AssistArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.transcript)
        .with_context(|| format!("reading {}", a.transcript.display()))?;
    let mut events = vec![pb::AssistRequest {
        event: Some(pb::assist_request::Event::Start(pb::AssistStart {
            tenant: a.tenant.clone(),
            conversation_id: a.conversation.clone(),
            lang: a.lang.clone(),
            channel: String::new(),
        })),
    }];
    let mut lines = Vec::new();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(l)
            .with_context(|| format!("{}:{}", a.transcript.display(), n + 1))?;
        lines.push((line.speaker.clone(), line.text.clone()));
        events.push(pb::AssistRequest {
            event: Some(pb::assist_request::Event::Turn(pb::AssistTurn {
                speaker: line.speaker,
                text: line.text,
                at_ms: line.at_ms,
            })),
        });
    }
    let mut c = AssistServiceClient::new(client::connect(cli).await?);
    let mut updates = c.assist(tokio_stream::iter(events)).await?.into_inner();
    while let Some(u) = updates.message().await? {
        let (speaker, said) = lines
            .get(u.turn_index as usize)
            .cloned()
            .unwrap_or_default();
        if cli.json {
            json(&json!({
                "turn_index": u.turn_index,
                "suggestions": u.suggestions.iter().map(|s| {
                    let (_, mut v) = describe(s);
                    v["reason"] = json!(s.reason);
                    v
                }).collect::<Vec<_>>(),
            }));
            continue;
        }
        println!("{speaker}: {said}");
        for s in &u.suggestions {
            println!("    {}  ({})", describe(s).0, s.reason);
        }
    }
    Ok(())
}
