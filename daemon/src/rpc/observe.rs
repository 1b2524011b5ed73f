//! Per-call metrics: a counter by method and status code, and a latency histogram.

use std::future::Future;
use std::time::Instant;

use tonic::{Response, Status};

use super::ServiceError;

pub async fn observed<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, ServiceError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await.map(Response::new).map_err(Status::from);
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    let code = format!("{code:?}");
    metrics::counter!("confidant_rpc_calls_total", "method" => method, "code" => code.clone())
        .increment(1);
    metrics::histogram!("confidant_rpc_seconds", "method" => method, "code" => code)
        .record(started.elapsed().as_secs_f64());
    result
}
