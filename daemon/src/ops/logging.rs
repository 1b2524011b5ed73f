//! Logs through tracing: human-readable on a terminal, JSON under systemd (journald keeps
//! it structured). Customer text is never a field of any event in this daemon.

use std::io::IsTerminal;

use crate::config::LogConfig;

/// qdrant-edge warns once at start about process-wide settings that only its server sets
/// (feature flags, an mmap probe) and that its embedded use does not need; an operator
/// should not be sent chasing them. An explicit directive in `log.level` still wins.
const QUIET: [&str; 2] = [
    "qdrant_edge::common::flags=error",
    "qdrant_edge::common::mmap=error",
];

pub fn init(cfg: &LogConfig) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for d in QUIET {
        let target = d.split('=').next().unwrap_or(d);
        if !cfg.level.contains(target)
            && let Ok(directive) = d.parse()
        {
            filter = filter.add_directive(directive);
        }
    }
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
