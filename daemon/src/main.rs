//! confidantd: Confidant's appliance daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use confidant_daemon::app::App;
use confidant_daemon::auth::TokenCache;
use confidant_daemon::config::{self, Config};
use confidant_daemon::ops::{self, notify};
use confidant_daemon::rpc;
use confidant_daemon::store::{Store, Synchronous};
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "confidantd",
    version,
    about = "Confidant's on-premise contact-center AI daemon"
)]
struct Args {
    /// Config file (TOML). Every key may also be set as CONFIDANT__SECTION__KEY.
    #[arg(long, short, env = "CONFIDANT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print the first error naming its key, and exit.
    #[arg(long)]
    check_config: bool,
}

fn load_config(args: &Args) -> anyhow::Result<(Config, Option<PathBuf>)> {
    match &args.config {
        Some(p) => Ok((Config::load(p, true)?, Some(p.clone()))),
        None => {
            let default = PathBuf::from(config::DEFAULT_PATH);
            let exists = default.is_file();
            Ok((Config::load(&default, false)?, exists.then_some(default)))
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (config, path) = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("confidantd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("configuration OK");
        return std::process::ExitCode::SUCCESS;
    }
    ops::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("confidantd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, path)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "confidantd failed");
            eprintln!("confidantd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    if !config.server.metrics_listen.is_empty() {
        let addr = config
            .server
            .metrics_listen
            .parse()
            .context("server.metrics_listen")?;
        ops::metrics::install(addr).context("starting the metrics listener")?;
    }
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    notify::status("opening storage");
    let sync = Synchronous::parse(&config.storage.sqlite_synchronous)
        .context("storage.sqlite_synchronous")?;
    let store = Store::open_with(&config.storage.url, sync)
        .await
        .context("storage.url")?;
    let tokens = TokenCache::load(store.clone())
        .await
        .context("loading API tokens")?;
    tokens.spawn_maintenance(Duration::from_secs(5));
    notify::status(&format!("loading model {}", config.model.dir.display()));
    let app = Arc::new(
        tokio::task::spawn_blocking(move || App::start(config, store, tokens))
            .await
            .context("start-up task")??,
    );
    let listeners = rpc::Listeners::bind(&app).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(rpc::serve(
        app.clone(),
        config_path.clone(),
        listeners_log(listeners),
        stop_rx,
    ));
    notify::spawn_watchdog(app.clone());
    ops::retention::spawn(app.clone());
    ops::indexing::spawn(app.clone());
    notify::ready();
    tracing::info!("confidantd ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration and models");
                let _ = ops::reload(&app, config_path.as_deref()).await;
            }
            res = &mut server => {
                res.context("server task")??;
                anyhow::bail!("the gRPC server stopped unexpectedly");
            }
        }
    }
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: draining in-flight calls"
    );
    notify::stopping();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res.context("server task")??,
        Err(_) => {
            tracing::warn!("grace period over; abandoning calls still in flight");
            server.abort();
        }
    }
    app.tokens().flush_used().await.ok();
    if let Err(e) = app.kb().index().flush() {
        tracing::error!(error = %e, "flushing the index at shutdown failed");
    }
    app.store().close().await;
    tracing::info!("confidantd stopped");
    Ok(())
}

fn listeners_log(l: rpc::Listeners) -> rpc::Listeners {
    if let Some(addr) = l.tcp_addr() {
        tracing::info!(%addr, "listening for gRPC");
    }
    l
}
