//! `confidantctl qa score FILE.jsonl`: scores a batch of transcripts through the daemon's
//! QaService with a progress bar, prints each contact's score and the failed rules, then a
//! summary by rule and the throughput. One transcript per line:
//! {"conversation_id": "…", "agent_id": "…", "team": "…",
//!  "turns": [{"speaker": "customer"|"agent", "text": "…", "at_ms": 0}, …]}

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use confidant_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::qa_service_client::QaServiceClient;
use serde::Deserialize;
use serde_json::json;

use crate::output::{json, table};
use crate::{Cli, client};

#[derive(Args)]
pub struct QaArgs {
    #[arg(long, global = true, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    #[command(subcommand)]
    command: QaCommand,
}

#[derive(Subcommand)]
enum QaCommand {
    /// Stored results by agent, team and rule.
    Report {
        /// Only results of the last this many hours (0: all).
        #[arg(long, default_value_t = 0)]
        hours: u64,
    },
    /// Score every transcript of a JSON-lines file against the tenant's rubric (results
    /// are stored by conversation id).
    Score {
        file: PathBuf,
        /// Transcripts scored at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        concurrency: u32,
    },
}

#[derive(Deserialize)]
struct TurnLine {
    speaker: String,
    text: String,
    #[serde(default)]
    at_ms: i64,
}

#[derive(Deserialize)]
struct Transcript {
    conversation_id: String,
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    customer_id: String,
    turns: Vec<TurnLine>,
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<(usize, pb::ScoreRequest)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: Transcript = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a transcript", file.display(), n + 1))?;
        out.push((
            n + 1,
            pb::ScoreRequest {
                tenant: String::new(),
                conversation_id: t.conversation_id,
                agent_id: t.agent_id,
                team: t.team,
                customer_id: t.customer_id,
                turns: t
                    .turns
                    .into_iter()
                    .map(|x| pb::QaTurn {
                        speaker: x.speaker,
                        text: x.text,
                        at_ms: x.at_ms,
                    })
                    .collect(),
            },
        ));
    }
    Ok(out)
}

pub async fn run(cli: &Cli, args: &QaArgs) -> anyhow::Result<()> {
    match &args.command {
        QaCommand::Score { file, concurrency } => score(cli, args, file, *concurrency).await,
        QaCommand::Report { hours } => report(cli, args, *hours).await,
    }
}

async fn report(cli: &Cli, args: &QaArgs, hours: u64) -> anyhow::Result<()> {
    let since_ms = if hours == 0 {
        0
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now - hours as i64 * 3_600_000
    };
    let mut c = QaServiceClient::new(client::connect(cli).await?);
    let r = c
        .report(pb::QaReportRequest {
            tenant: args.tenant.clone(),
            since_ms,
        })
        .await?
        .into_inner();
    let group = |g: &pb::QaGroup| json!({"name": g.name, "contacts": g.contacts, "mean_total": g.mean_total, "critical_failed": g.critical_failed});
    if cli.json {
        json(&json!({
            "contacts": r.contacts,
            "by_agent": r.by_agent.iter().map(group).collect::<Vec<_>>(),
            "by_team": r.by_team.iter().map(group).collect::<Vec<_>>(),
            "by_rule": r.by_rule.iter().map(|x| json!({"id": x.id, "failed": x.failed, "applicable": x.applicable})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("{} contacts scored", r.contacts);
    for (title, groups) in [("agent", &r.by_agent), ("team", &r.by_team)] {
        println!();
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    if g.name.is_empty() {
                        "(none)".into()
                    } else {
                        g.name.clone()
                    },
                    g.contacts.to_string(),
                    format!("{:.1}", g.mean_total),
                    g.critical_failed.to_string(),
                ]
            })
            .collect();
        table(
            &[title, "contacts", "mean score", "critical failures"],
            &rows,
        );
    }
    println!();
    let rows: Vec<Vec<String>> = r
        .by_rule
        .iter()
        .map(|x| {
            vec![
                x.id.clone(),
                x.failed.to_string(),
                x.applicable.to_string(),
                format!(
                    "{:.1}%",
                    x.failed as f64 * 100.0 / x.applicable.max(1) as f64
                ),
            ]
        })
        .collect();
    table(&["rule", "failed", "applicable", "fail rate"], &rows);
    Ok(())
}

async fn score(cli: &Cli, args: &QaArgs, file: &PathBuf, concurrency: u32) -> anyhow::Result<()> {
    let batch = read(file)?;
    let conn = client::connect(cli).await?;
    let bar = ProgressBar::new(batch.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} scoring [{bar:30}] {pos}/{len} transcripts  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (line, mut req)) in batch.into_iter().enumerate() {
        req.tenant = args.tenant.clone();
        let mut c = QaServiceClient::new(conn.clone());
        let permit = limit.clone().acquire_owned().await?;
        let bar = bar.clone();
        let path = file.display().to_string();
        tasks.spawn(async move {
            let agent = (
                req.agent_id.clone(),
                req.team.clone(),
                req.conversation_id.clone(),
            );
            let r = c
                .score(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|e| anyhow::anyhow!("{path}:{line}: {}", e.message()));
            drop(permit);
            bar.inc(1);
            (i, agent, r)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done?);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    results.sort_by_key(|r| r.0);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let (mut scored, mut sum, mut critical, mut errors) = (0u64, 0.0, 0u64, Vec::new());
    let mut rows = Vec::new();
    for (_, (agent, team, id), r) in results {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        scored += 1;
        sum += r.total;
        critical += u64::from(r.critical_failed);
        let failed: Vec<String> = r
            .rules
            .iter()
            .filter(|x| x.outcome == "fail")
            .map(|x| x.id.clone())
            .collect();
        for f in &failed {
            *failures.entry(f.clone()).or_default() += 1;
        }
        if cli.json {
            json(&json!({
                "conversation_id": id, "agent_id": agent, "team": team, "total": r.total,
                "critical_failed": r.critical_failed, "alerts": r.alerts,
                "rules": r.rules.iter().map(|x| json!({
                    "id": x.id, "kind": x.kind, "outcome": x.outcome, "weight": x.weight,
                    "critical": x.critical, "detail": x.detail,
                    "evidence": x.evidence.iter().map(|e| json!({"turn": e.turn_index, "text": e.text, "similarity": e.similarity})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }));
        } else {
            rows.push(vec![
                id,
                agent,
                format!("{:.1}", r.total),
                if r.critical_failed { "CRITICAL" } else { "" }.into(),
                failed.join(", "),
            ]);
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    let rate = if elapsed > 0.0 {
        scored as f64 / elapsed
    } else {
        0.0
    };
    let mean = if scored > 0 { sum / scored as f64 } else { 0.0 };
    if cli.json {
        json(&json!({
            "summary": {"scored": scored, "errors": errors.len(), "mean_total": mean,
                        "critical_failed": critical, "rule_failures": failures,
                        "seconds": elapsed, "transcripts_per_second": rate}
        }));
    } else {
        table(
            &["conversation", "agent", "score", "", "failed rules"],
            &rows,
        );
        println!();
        println!(
            "{scored} scored, {} errors, mean {mean:.1}, {critical} critical failures, {rate:.1} transcripts/s",
            errors.len()
        );
        let by_rule: Vec<Vec<String>> = failures
            .iter()
            .map(|(k, v)| {
                vec![
                    k.clone(),
                    v.to_string(),
                    format!("{:.1}%", *v as f64 * 100.0 / scored.max(1) as f64),
                ]
            })
            .collect();
        if !by_rule.is_empty() {
            table(&["rule", "failed", "share"], &by_rule);
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{} transcripts could not be scored", errors.len());
    }
    Ok(())
}
