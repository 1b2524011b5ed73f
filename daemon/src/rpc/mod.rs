//! gRPC: thin tonic services that validate, delegate and translate, plus the server that
//! hosts them (TCP with optional TLS/mTLS, a Unix socket for the local CLI, health and
//! reflection).

mod admin;
mod assist;
mod bot;
mod embeddings;
mod intents;
mod kb;
mod observe;
mod qa;
mod status;

use std::path::PathBuf;
use std::sync::Arc;

use confidant_proto::v1::admin_service_server::AdminServiceServer;
use confidant_proto::v1::assist_service_server::AssistServiceServer;
use confidant_proto::v1::bot_service_server::BotServiceServer;
use confidant_proto::v1::embedding_service_server::EmbeddingServiceServer;
use confidant_proto::v1::intent_service_server::IntentServiceServer;
use confidant_proto::v1::knowledge_base_service_server::KnowledgeBaseServiceServer;
use confidant_proto::v1::qa_service_server::QaServiceServer;
use confidant_proto::v1::routing_service_server::RoutingServiceServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use admin::AdminService;
pub use assist::AssistService;
pub use bot::{BotService, RoutingService};
pub use embeddings::EmbeddingService;
pub use intents::IntentService;
pub use kb::KbService;
pub use qa::QaService;
pub use status::ServiceError;

use crate::app::App;
use crate::auth::Authenticator;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Builds every service onto a router; called once per listener.
async fn router(
    app: &Arc<App>,
    config_path: &Option<PathBuf>,
    mut builder: Server,
) -> Result<Router, ServeError> {
    let max = app.config().server.max_request_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<EmbeddingServiceServer<EmbeddingService>>()
        .await;
    health
        .set_serving::<AdminServiceServer<AdminService>>()
        .await;
    health
        .set_serving::<KnowledgeBaseServiceServer<KbService>>()
        .await;
    health
        .set_serving::<IntentServiceServer<IntentService>>()
        .await;
    health.set_serving::<BotServiceServer<BotService>>().await;
    health.set_serving::<QaServiceServer<QaService>>().await;
    health
        .set_serving::<AssistServiceServer<AssistService>>()
        .await;
    health
        .set_serving::<RoutingServiceServer<RoutingService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(confidant_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Health and reflection stay open (load balancers, grpcurl); confidant.v1 needs a token
    // or the local socket.
    let auth = Authenticator::new(app.tokens().clone());
    Ok(builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            EmbeddingServiceServer::new(EmbeddingService::new(app.clone()))
                .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            KnowledgeBaseServiceServer::new(KbService::new(app.clone()))
                .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            IntentServiceServer::new(IntentService::new(app.clone()))
                .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            BotServiceServer::new(BotService::new(app.clone())).max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            AssistServiceServer::new(AssistService::new(app.clone()))
                .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            QaServiceServer::new(QaService::new(app.clone())).max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            RoutingServiceServer::new(RoutingService::new(app.clone()))
                .max_decoding_message_size(max),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            AdminServiceServer::new(AdminService::new(app.clone(), config_path.clone()))
                .max_decoding_message_size(max),
            auth,
        )))
}

/// The tenant a call acts on, for a caller holding one of `roles`: a token's own; the
/// local operator must name one.
pub(crate) fn scoped<T>(
    req: &tonic::Request<T>,
    roles: &[crate::auth::Role],
    requested: &str,
) -> Result<String, ServiceError> {
    let who = crate::auth::identity(req)?;
    who.require_any(roles)?;
    who.scope(requested)?.ok_or_else(|| {
        ServiceError::invalid(
            "tenant",
            "required on the local socket (e.g. --tenant bank1)",
        )
    })
}

/// The checks every text-taking call makes, naming the offending `texts[i]`.
pub(crate) fn check_texts(
    texts: &[String],
    limits: &crate::config::LimitsConfig,
) -> Result<(), ServiceError> {
    if texts.is_empty() {
        return Err(ServiceError::invalid(
            "texts",
            "at least one text is required",
        ));
    }
    if texts.len() > limits.max_texts_per_request {
        return Err(ServiceError::invalid(
            "texts",
            format!(
                "{} texts exceed the limit of {}",
                texts.len(),
                limits.max_texts_per_request
            ),
        ));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(ServiceError::invalid(
                format!("texts[{i}]"),
                "must not be empty",
            ));
        }
        let n = t.chars().count();
        if n > limits.max_text_chars {
            return Err(ServiceError::invalid(
                format!("texts[{i}]"),
                format!(
                    "{n} characters exceed the limit of {}",
                    limits.max_text_chars
                ),
            ));
        }
    }
    Ok(())
}

fn tls(config: &crate::config::ServerConfig) -> Result<Option<ServerTlsConfig>, ServeError> {
    if config.tls_cert.is_empty() {
        return Ok(None);
    }
    let read = |p: &str| std::fs::read(p).map_err(|e| ServeError::Tls(format!("{p}: {e}")));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&config.tls_cert)?,
        read(&config.tls_key)?,
    ));
    if !config.tls_client_ca.is_empty() {
        tls = tls.client_ca_root(Certificate::from_pem(read(&config.tls_client_ca)?));
    }
    Ok(Some(tls))
}

/// Listeners, bound before READY=1 so that systemd never reports a daemon that cannot serve.
pub struct Listeners {
    tcp: TcpListener,
    unix: Option<(UnixListener, PathBuf)>,
}

impl Listeners {
    pub async fn bind(app: &App) -> Result<Self, ServeError> {
        let cfg = app.config();
        let tcp = match crate::ops::activation::inherited_tcp_listener() {
            Ok(Some(l)) => TcpListener::from_std(l).map_err(|source| ServeError::Bind {
                addr: "LISTEN_FDS".into(),
                source,
            })?,
            Ok(None) => TcpListener::bind(&cfg.server.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: cfg.server.listen.clone(),
                    source,
                })?,
            Err(source) => {
                return Err(ServeError::Bind {
                    addr: "LISTEN_FDS".into(),
                    source,
                });
            }
        };
        let unix = if cfg.server.unix_socket.is_empty() {
            None
        } else {
            let path = PathBuf::from(&cfg.server.unix_socket);
            // A stale socket from a previous run would make bind fail.
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).map_err(|source| ServeError::Bind {
                addr: path.display().to_string(),
                source,
            })?;
            Some((l, path))
        };
        Ok(Self { tcp, unix })
    }

    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.local_addr().ok()
    }
}

/// Accepted TCP connections, with Nagle's algorithm off. `Server::tcp_nodelay` applies
/// only to listeners tonic binds itself, not to ours (bound early, or inherited from
/// systemd): without it each small response frame waited for the client's delayed ACK,
/// and ~5% of calls took 20-50 ms however little work they were (Suggest from memory,
/// Answer at half load, measured with benches/load).
fn accepting(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves until `shutdown` turns true, then lets in-flight calls finish.
pub async fn serve(
    app: Arc<App>,
    config_path: Option<PathBuf>,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let cfg = app.config();
    let mut tcp_builder = Server::builder();
    if let Some(tls) = tls(&cfg.server)? {
        tcp_builder = tcp_builder.tls_config(tls)?;
    }
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tcp = router(&app, &config_path, tcp_builder)
        .await?
        .serve_with_incoming_shutdown(accepting(listeners.tcp), wait(shutdown.clone()));
    match listeners.unix {
        None => tcp.await?,
        Some((unix, path)) => {
            let local = router(&app, &config_path, Server::builder())
                .await?
                .serve_with_incoming_shutdown(UnixListenerStream::new(unix), wait(shutdown));
            let (a, b) = tokio::join!(tcp, local);
            let _ = std::fs::remove_file(&path);
            a?;
            b?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    /// Without TCP_NODELAY on accepted connections small responses wait for delayed ACKs.
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut incoming = super::accepting(listener);
        let _client = tokio::net::TcpStream::connect(addr).await?;
        let accepted = incoming.next().await.ok_or("no connection accepted")??;
        assert!(accepted.nodelay()?);
        Ok(())
    }
}
