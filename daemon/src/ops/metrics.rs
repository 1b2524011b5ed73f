//! Prometheus metrics on their own listener.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

/// Starts the exporter on the current tokio runtime.
pub fn install(addr: SocketAddr) -> Result<(), BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("batch_size".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("batch_tokens".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("per_commit".into()), COUNT_BUCKETS)?
        .install()?;
    metrics::describe_counter!(
        "confidant_rpc_calls_total",
        "gRPC calls by method and status code"
    );
    metrics::describe_histogram!(
        "confidant_rpc_seconds",
        metrics::Unit::Seconds,
        "gRPC call latency"
    );
    metrics::describe_gauge!(
        "confidant_inference_queue_depth",
        "Requests waiting for an inference worker"
    );
    metrics::describe_histogram!("confidant_inference_batch_size", "Inputs per forward pass");
    metrics::describe_histogram!(
        "confidant_inference_batch_tokens",
        "Padded tokens per forward pass"
    );
    metrics::describe_histogram!(
        "confidant_inference_seconds",
        metrics::Unit::Seconds,
        "Forward pass time"
    );
    metrics::describe_counter!(
        "confidant_inference_rejected_total",
        "Requests refused because the queue was full"
    );
    metrics::describe_counter!(
        "confidant_inference_cancelled_total",
        "Requests whose caller left before they ran"
    );
    metrics::describe_histogram!(
        "confidant_kb_search_seconds",
        metrics::Unit::Seconds,
        "One knowledge-base index search (signal: dense or lexical), on its thread"
    );
    metrics::describe_histogram!(
        "confidant_store_turns_per_commit",
        "Bot turns written in one transaction (grouped on a busy SQLite)"
    );
    metrics::describe_histogram!(
        "confidant_model_load_seconds",
        metrics::Unit::Seconds,
        "Model load and verification time"
    );
    Ok(())
}
