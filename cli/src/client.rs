//! Connecting to the daemon: a Unix socket for the local operator, or TCP/TLS with a token.

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Cli;

/// The daemon could not be reached at all (exit code 2, unlike a failed call).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to confidantd at {addr}: {reason}")]
pub struct ConnectError {
    pub addr: String,
    pub reason: String,
}

/// Adds `authorization: Bearer …` to every call when a token was given.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Conn = InterceptedService<Channel, Bearer>;

fn bearer(cli: &Cli) -> anyhow::Result<Bearer> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let value = token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the token has characters a header cannot carry")?;
    Ok(Bearer(value))
}

pub async fn connect(cli: &Cli) -> anyhow::Result<Conn> {
    let auth = bearer(cli)?;
    Ok(InterceptedService::new(channel(cli).await?, auth))
}

async fn channel(cli: &Cli) -> anyhow::Result<Channel> {
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
        if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
            let cert =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| fail(e.to_string()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| fail(e.to_string()).into())
}
