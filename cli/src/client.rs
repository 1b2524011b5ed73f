//! Connecting to the daemon: a Unix socket for the local operator, or TCP/TLS.

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::Cli;

/// The daemon could not be reached at all (exit code 2, unlike a failed call).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to confidantd at {addr}: {reason}")]
pub struct ConnectError {
    pub addr: String,
    pub reason: String,
}

pub async fn connect(cli: &Cli) -> anyhow::Result<Channel> {
    let fail = |reason: String| ConnectError {
        addr: cli.addr.clone(),
        reason,
    };
    if let Some(path) = cli.addr.strip_prefix("unix:") {
        let path = path.to_string();
        // The URI is a placeholder: the connector below ignores it.
        let channel = Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| fail(e.to_string()))?;
        return Ok(channel);
    }
    let mut endpoint = Endpoint::from_shared(cli.addr.clone()).map_err(|e| fail(e.to_string()))?;
    if cli.addr.starts_with("https://") {
        // On-prem daemons use the site's own CA, named with --ca.
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cli.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| fail(e.to_string()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| fail(e.to_string()).into())
}
