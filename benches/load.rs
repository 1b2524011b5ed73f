//! A gRPC load generator for confidantd: closed loop (N concurrent callers, each calling
//! again as soon as it is answered) or open loop (calls started at a fixed rate whether or
//! not earlier ones were answered, latency measured from the scheduled start so that a
//! stalled server is not hidden). Prints one JSON line: throughput, p50/p95/p99 and the
//! share of RESOURCE_EXHAUSTED answers.
//!
//!   load --addr http://127.0.0.1:50051 --token-file T --rpc answer \
//!        --utterances ../shared/bench/utterances_2000.txt --concurrency 8 --duration 20
//!
//! `--rpc assist` opens `--concurrency` agent-assist streams (agent desktops), each sending
//! customer turns `--think-ms` apart on average (0.5-1.5x, streams staggered) and a new
//! conversation every `--turns-per-stream`;
//! a call is one turn, timed from sending it to the update that answers it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use confidant_proto::v1 as pb;
use pb::bot_service_client::BotServiceClient;
use pb::embedding_service_client::EmbeddingServiceClient;
use pb::knowledge_base_service_client::KnowledgeBaseServiceClient;
use pb::routing_service_client::RoutingServiceClient;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Rpc {
    /// EmbeddingService/Embed, one text per call: the raw model capacity.
    Embed,
    /// BotService/Answer, a new conversation per call.
    Answer,
    /// BotService/Suggest on a prefix of each utterance.
    Suggest,
    /// RoutingService/Route, a new contact per call.
    Route,
    /// KnowledgeBaseService/Search.
    Search,
    /// AssistService/Assist: one customer turn on a live stream (closed loop only).
    Assist,
}

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long, value_enum)]
    rpc: Rpc,
    /// One utterance per line, used in turn.
    #[arg(long)]
    utterances: PathBuf,
    /// Closed loop: this many concurrent callers.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: calls started per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to run (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Stop after this many calls (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seconds of calls before measuring (closed loop only).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open loop: at most this many calls in flight; more count as "dropped" (keeps the
    /// generator's own memory bounded when the server stalls).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: u64,
    /// Connections to spread the calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Assist: pause between a turn's update and the next turn of the same stream.
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Assist: turns per conversation before the stream is closed and a new one opened.
    #[arg(long, default_value_t = 20)]
    turns_per_stream: u64,
    /// A label for the output line.
    #[arg(long, default_value = "")]
    label: String,
    /// The server's process id (same machine, Linux): its CPU time over the measured
    /// window is reported per successful call, beside the generator's own and the
    /// machine's.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// CPU time, in clock ticks (USER_HZ, 100 a second on Linux), of a process (all its
/// threads), and of the whole machine with its idle time apart.
#[derive(Clone, Default)]
struct CpuSample {
    server: u64,
    /// The server's ticks by thread name, digits at the end dropped (`inference-0` and
    /// `inference-1` are `inference-`).
    server_threads: BTreeMap<String, u64>,
    client: u64,
    machine_busy: u64,
    machine_total: u64,
}

fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let (Ok(comm), Some(ticks)) = (
            std::fs::read_to_string(t.path().join("comm")),
            process_ticks(&format!("{pid}/task/{tid}")),
        ) else {
            continue;
        };
        let name = comm.trim().trim_end_matches(|c: char| c.is_ascii_digit());
        *by_name.entry(name.to_string()).or_default() += ticks;
    }
    by_name
}

fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn cpu_sample(server_pid: Option<u32>) -> Option<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(CpuSample {
        server: match server_pid {
            Some(p) => process_ticks(&p.to_string())?,
            None => 0,
        },
        server_threads: server_pid.map(thread_ticks).unwrap_or_default(),
        client: process_ticks("self")?,
        machine_busy: total - idle,
        machine_total: total,
    })
}

/// CPU milliseconds per successful call (server, generator) and the machine's busy share
/// between two samples.
fn cpu_report(
    before: &Option<CpuSample>,
    after: &Option<CpuSample>,
    ok: u64,
    server: bool,
) -> serde_json::Value {
    let (Some(b), Some(a)) = (before, after) else {
        return serde_json::Value::Null;
    };
    let per_call = |ticks: u64| (ticks as f64 * 10.0 / ok.max(1) as f64 * 100.0).round() / 100.0;
    let span = a.machine_total.saturating_sub(b.machine_total).max(1) as f64;
    // Threads that ended within the window are missing from the second sample; their
    // time is in the process's total only.
    let threads: BTreeMap<&String, f64> = a
        .server_threads
        .iter()
        .map(|(name, &t)| {
            let before = b.server_threads.get(name).copied().unwrap_or(0);
            (name, per_call(t.saturating_sub(before)))
        })
        .filter(|(_, ms)| *ms > 0.0)
        .collect();
    serde_json::json!({
        "server_ms_per_ok": server.then(|| per_call(a.server.saturating_sub(b.server))),
        "server_ms_per_ok_by_thread": server.then_some(threads),
        "generator_ms_per_ok": per_call(a.client.saturating_sub(b.client)),
        "machine_busy_share":
            (a.machine_busy.saturating_sub(b.machine_busy) as f64 / span * 1000.0).round() / 1000.0,
    })
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    exhausted: u64,
    other: u64,
    first_error: Option<String>,
}

struct Shared {
    rpc: Rpc,
    token: String,
    utterances: Vec<String>,
    channels: Vec<Channel>,
    next: AtomicU64,
    tally: Mutex<Tally>,
}

fn authed<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

/// One caller of `--rpc assist`: streams of `turns` customer turns each, until `end_at`.
/// Turns sent before `start_at` warm up and are not recorded.
async fn assist_caller(
    s: &Shared,
    caller: u64,
    turns: u64,
    think: Duration,
    (start_at, end_at): (Instant, Instant),
    measured: &AtomicU64,
    limit: u64,
) -> anyhow::Result<()> {
    use pb::assist_service_client::AssistServiceClient;
    let ch = s.channels[(caller as usize) % s.channels.len()].clone();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    // Desktops are not in step: stagger the first turns over one pause, and vary each
    // pause 0.5-1.5x (a fixed pause kept every stream in step, so turns came in bursts).
    let spread = |i: u64| {
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        think.mul_f64(x as f64 / (1u64 << 53) as f64)
    };
    tokio::time::sleep(spread(caller)).await;
    for conversation in 0u64.. {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::AssistRequest>(4);
        let request = authed(tokio_stream::wrappers::ReceiverStream::new(rx), &s.token)?;
        let start = pb::assist_request::Event::Start(pb::AssistStart {
            conversation_id: format!("load-{}-{caller}-{conversation}", std::process::id()),
            ..Default::default()
        });
        tx.send(pb::AssistRequest { event: Some(start) }).await?;
        let mut updates = AssistServiceClient::new(ch.clone())
            .assist(request)
            .await?
            .into_inner();
        for _ in 0..turns {
            if Instant::now() >= end_at {
                return Ok(());
            }
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            let text = s.utterances[(i as usize) % s.utterances.len()].clone();
            let turn = pb::assist_request::Event::Turn(pb::AssistTurn {
                speaker: "customer".into(),
                text,
                at_ms: now_ms(),
            });
            let started = Instant::now();
            tx.send(pb::AssistRequest { event: Some(turn) }).await?;
            let r = match updates.message().await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(tonic::Status::unavailable("the stream ended")),
                Err(e) => Err(e),
            };
            let failed = r.is_err();
            if started >= start_at {
                if measured.fetch_add(1, Ordering::Relaxed) >= limit {
                    return Ok(());
                }
                record(s, started, r).await;
            }
            if failed {
                break;
            }
            tokio::time::sleep(think / 2 + spread(i)).await;
        }
    }
    Ok(())
}

/// One call; the status code it ended with.
async fn call(s: &Shared, i: u64) -> anyhow::Result<Result<(), tonic::Status>> {
    let text = s.utterances[(i as usize) % s.utterances.len()].clone();
    let ch = s.channels[(i as usize) % s.channels.len()].clone();
    let t = &s.token;
    let r = match s.rpc {
        Rpc::Embed => EmbeddingServiceClient::new(ch)
            .embed(authed(
                pb::EmbedRequest {
                    texts: vec![text],
                    ..Default::default()
                },
                t,
            )?)
            .await
            .map(drop),
        Rpc::Answer => BotServiceClient::new(ch)
            .answer(authed(
                pb::AnswerRequest {
                    conversation_id: format!("load-{}-{i}", std::process::id()),
                    text,
                    ..Default::default()
                },
                t,
            )?)
            .await
            .map(drop),
        Rpc::Suggest => {
            // A prefix of 3 to 20 characters, as typed so far.
            let n = 3 + (i as usize * 7) % 18;
            let prefix: String = text.chars().take(n).collect();
            BotServiceClient::new(ch)
                .suggest(authed(
                    pb::SuggestRequest {
                        prefix,
                        ..Default::default()
                    },
                    t,
                )?)
                .await
                .map(drop)
        }
        Rpc::Route => RoutingServiceClient::new(ch)
            .route(authed(
                pb::RouteRequest {
                    contact_id: format!("load-{}-{i}", std::process::id()),
                    text,
                    ..Default::default()
                },
                t,
            )?)
            .await
            .map(drop),
        Rpc::Search => KnowledgeBaseServiceClient::new(ch)
            .search(authed(
                pb::SearchRequest {
                    text,
                    limit: 5,
                    ..Default::default()
                },
                t,
            )?)
            .await
            .map(drop),
        Rpc::Assist => anyhow::bail!("assist turns are sent by assist_caller"),
    };
    Ok(r)
}

async fn record(s: &Shared, started: Instant, r: Result<(), tonic::Status>) {
    let us = started.elapsed().as_micros() as u64;
    let mut t = s.tally.lock().await;
    match r {
        Ok(()) => {
            t.ok += 1;
            t.latencies_us.push(us);
        }
        Err(e) if e.code() == tonic::Code::ResourceExhausted => t.exhausted += 1,
        Err(e) => {
            t.other += 1;
            if t.first_error.is_none() {
                t.first_error = Some(format!("{:?}: {}", e.code(), e.message()));
            }
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("reading {}", a.token_file.display()))?
        .trim()
        .to_string();
    let utterances: Vec<String> = std::fs::read_to_string(&a.utterances)
        .with_context(|| format!("reading {}", a.utterances.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    anyhow::ensure!(!utterances.is_empty(), "no utterances");
    let mut channels = Vec::new();
    for _ in 0..a.connections.max(1) {
        channels.push(Endpoint::from_shared(a.addr.clone())?.connect().await?);
    }
    let s = Arc::new(Shared {
        rpc: a.rpc,
        token,
        utterances,
        channels,
        next: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
    });
    let duration = Duration::from_secs_f64(a.duration);
    let limit = if a.count == 0 { u64::MAX } else { a.count };
    let mut dropped = 0u64;
    // CPU over the measured window: from the first call of an open loop, from the end of
    // the warm-up of a closed one.
    let cpu_at = Arc::new(Mutex::new((None, None)));
    let (mode, measured) = if let Some(rate) = a.rate {
        anyhow::ensure!(rate > 0.0, "--rate must be positive");
        anyhow::ensure!(
            !matches!(a.rpc, Rpc::Assist),
            "--rpc assist runs closed loop: --concurrency streams, --think-ms apart"
        );
        let in_flight = Arc::new(AtomicU64::new(0));
        cpu_at.lock().await.0 = cpu_sample(a.server_pid);
        let start = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut handles = Vec::new();
        let mut i = 0u64;
        while start.elapsed() < duration && i < limit {
            let due = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
            if in_flight.load(Ordering::Relaxed) >= a.max_in_flight {
                dropped += 1;
                i += 1;
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (s, f) = (s.clone(), in_flight.clone());
            handles.push(tokio::spawn(async move {
                let r = call(&s, i).await;
                if let Ok(r) = r {
                    record(&s, due, r).await;
                }
                f.fetch_sub(1, Ordering::Relaxed);
            }));
            i += 1;
        }
        for h in handles {
            let _ = h.await;
        }
        cpu_at.lock().await.1 = cpu_sample(a.server_pid);
        // Until the last answer: a server that fell behind is not flattered.
        (format!("open-loop {rate}/s"), start.elapsed())
    } else {
        let n = a.concurrency.unwrap_or(1).max(1);
        let warm_until = Instant::now() + Duration::from_secs_f64(a.warmup);
        let measuring = Arc::new(AtomicU64::new(0));
        let start_at = warm_until;
        let end_at = warm_until + duration;
        let mut handles = Vec::new();
        {
            let (cpu_at, pid) = (cpu_at.clone(), a.server_pid);
            handles.push(tokio::spawn(async move {
                tokio::time::sleep_until(start_at.into()).await;
                cpu_at.lock().await.0 = cpu_sample(pid);
                tokio::time::sleep_until(end_at.into()).await;
                cpu_at.lock().await.1 = cpu_sample(pid);
            }));
        }
        for caller in 0..n {
            let (s, m) = (s.clone(), measuring.clone());
            if matches!(a.rpc, Rpc::Assist) {
                let (turns, think) = (a.turns_per_stream.max(1), Duration::from_millis(a.think_ms));
                handles.push(tokio::spawn(async move {
                    let window = (start_at, end_at);
                    if let Err(e) =
                        assist_caller(&s, caller as u64, turns, think, window, &m, limit).await
                    {
                        let mut t = s.tally.lock().await;
                        t.other += 1;
                        t.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }));
                continue;
            }
            handles.push(tokio::spawn(async move {
                loop {
                    let now = Instant::now();
                    if now >= end_at {
                        break;
                    }
                    let i = s.next.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let Ok(r) = call(&s, i).await else { break };
                    if started >= start_at {
                        if m.fetch_add(1, Ordering::Relaxed) >= limit {
                            break;
                        }
                        record(&s, started, r).await;
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        (
            match a.rpc {
                Rpc::Assist => format!("{n} streams, {} ms think", a.think_ms),
                _ => format!("closed-loop x{n}"),
            },
            end_at.saturating_duration_since(start_at),
        )
    };
    let (cpu_before, cpu_after) = cpu_at.lock().await.clone();
    let mut t = s.tally.lock().await;
    t.latencies_us.sort_unstable();
    let total = t.ok + t.exhausted + t.other;
    let secs = measured.as_secs_f64().max(1e-9);
    let out = serde_json::json!({
        "label": a.label,
        "rpc": format!("{:?}", a.rpc).to_lowercase(),
        "mode": mode,
        "seconds": (secs * 100.0).round() / 100.0,
        "calls": total,
        "ok": t.ok,
        "resource_exhausted": t.exhausted,
        "other_errors": t.other,
        "dropped_by_generator": dropped,
        "exhausted_share": if total == 0 { 0.0 } else { t.exhausted as f64 / total as f64 },
        "ok_per_second": (t.ok as f64 / secs * 10.0).round() / 10.0,
        "p50_ms": pct(&t.latencies_us, 0.50),
        "p95_ms": pct(&t.latencies_us, 0.95),
        "p99_ms": pct(&t.latencies_us, 0.99),
        "max_ms": pct(&t.latencies_us, 1.0),
        "first_error": t.first_error,
        "cpu": cpu_report(&cpu_before, &cpu_after, t.ok, a.server_pid.is_some()),
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_from_proc_and_reported_per_call() {
        // This process stands in for the server: its own threads are readable.
        let now = cpu_sample(Some(std::process::id())).expect("/proc is readable");
        assert!(now.machine_total >= now.machine_busy);
        assert!(!now.server_threads.is_empty());
        let sample = |server, worker, client, busy, total| CpuSample {
            server,
            server_threads: BTreeMap::from([("inference-".to_string(), worker)]),
            client,
            machine_busy: busy,
            machine_total: total,
        };
        // 200 ticks (2 s) of server CPU over 100 calls: 20 ms a call.
        let r = cpu_report(
            &Some(sample(1000, 300, 50, 400, 1000)),
            &Some(sample(1200, 350, 60, 700, 1400)),
            100,
            true,
        );
        assert_eq!(r["server_ms_per_ok"], 20.0);
        assert_eq!(r["server_ms_per_ok_by_thread"]["inference-"], 5.0);
        assert_eq!(r["generator_ms_per_ok"], 1.0);
        assert_eq!(r["machine_busy_share"], 0.75);
        assert!(cpu_report(&None, &Some(now), 1, true).is_null());
    }
}
