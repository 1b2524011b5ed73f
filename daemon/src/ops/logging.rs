//! Logs through tracing: human-readable on a terminal, JSON under systemd (journald keeps
//! it structured). Customer text is never a field of any event in this daemon.

use std::io::IsTerminal;

use crate::config::LogConfig;

pub fn init(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match cfg.format.as_str() {
        "json" => true,
        "text" => false,
        _ => std::env::var_os("JOURNAL_STREAM").is_some() || !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
