use anyhow::bail;
use confidant_proto::v1 as pb;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::output::{json, table};
use crate::{Cli, client};

pub(crate) fn model_json(m: &pb::ModelStatus) -> serde_json::Value {
    json!({
        "role": m.role, "name": m.name, "directory": m.directory, "dimension": m.dimension,
        "max_seq_length": m.max_seq_length, "languages": m.languages, "fingerprint": m.fingerprint,
        "load_seconds": m.load_seconds, "device": m.device,
    })
}

pub(crate) fn print_models(models: &[pb::ModelStatus]) {
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                m.role.clone(),
                m.name.clone(),
                m.dimension.to_string(),
                m.device.clone(),
                m.fingerprint.chars().take(12).collect(),
                m.directory.clone(),
            ]
        })
        .collect();
    table(
        &["role", "name", "dim", "device", "fingerprint", "directory"],
        &rows,
    );
}

pub async fn status(cli: &Cli) -> anyhow::Result<()> {
    let mut c = pb::admin_service_client::AdminServiceClient::new(client::connect(cli).await?);
    let s = c.status(pb::StatusRequest {}).await?.into_inner();
    let q = s.queue.unwrap_or_default();
    if cli.json {
        json(&json!({
            "version": s.version, "uptime_seconds": s.uptime_seconds,
            "models": s.models.iter().map(model_json).collect::<Vec<_>>(),
            "queue": {"depth": q.depth, "capacity": q.capacity, "batches": q.batches, "texts": q.texts,
                      "rejected": q.rejected, "cancelled": q.cancelled, "worker_alive": q.worker_alive,
                      "workers": q.workers},
            "kb": {"published": s.kb_published, "drafts": s.kb_drafts, "index_pending": s.kb_index_pending},
        }));
        return Ok(());
    }
    println!("confidantd {}  up {}s", s.version, s.uptime_seconds);
    println!(
        "knowledge base {} published  {} drafts  {} waiting for the index",
        s.kb_published, s.kb_drafts, s.kb_index_pending
    );
    println!(
        "queue {}/{}  batches {}  texts {}  rejected {}  cancelled {}  workers {} {}",
        q.depth,
        q.capacity,
        q.batches,
        q.texts,
        q.rejected,
        q.cancelled,
        q.workers,
        if q.worker_alive {
            "alive"
        } else {
            "NOT RESPONDING"
        }
    );
    println!();
    print_models(&s.models);
    Ok(())
}

pub async fn health(cli: &Cli) -> anyhow::Result<()> {
    let mut c = HealthClient::new(client::connect(cli).await?);
    let r = c
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown);
    if cli.json {
        json(&json!({"status": status.as_str_name()}));
    } else {
        println!("{}", status.as_str_name());
    }
    if status != ServingStatus::Serving {
        bail!("daemon is not serving");
    }
    Ok(())
}
