//! Operations: systemd notification and watchdog, socket activation, reload, logging, metrics.

pub mod activation;
pub mod indexing;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod retention;

use std::path::Path;
use std::sync::Arc;

use crate::app::App;
use crate::config::{Config, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] crate::app::StartError),
    #[error("reload task failed: {0}")]
    Task(String),
}

/// Re-reads the config file (when the daemon was started with one) and reloads the models and classifier heads,
/// telling systemd RELOADING=1 … READY=1. On failure the previous config and models stay.
pub async fn reload(app: &Arc<App>, config_path: Option<&Path>) -> Result<(), ReloadError> {
    notify::reloading();
    let result = async {
        let config = match config_path {
            Some(p) => Config::load(p, true)?,
            None => (*app.config()).clone(),
        };
        let old = app.config();
        if config.server.listen != old.server.listen
            || config.server.unix_socket != old.server.unix_socket
        {
            tracing::warn!("listener changes take effect at the next restart");
        }
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.reload(config))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        Ok(())
    }
    .await;
    match &result {
        Ok(()) => {
            tracing::info!("reload complete");
            ::metrics::counter!("confidant_reloads_total", "result" => "ok").increment(1);
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; previous models keep serving");
            ::metrics::counter!("confidant_reloads_total", "result" => "failed").increment(1);
        }
    }
    notify::ready();
    result
}
