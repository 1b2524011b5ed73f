//! confidantd: the daemon's library. One folder per concern (see DESIGN.md):
//! `config`, `rpc` (thin tonic services), `ops` (systemd, signals, metrics, logging),
//! and `app` (the shared state the services delegate to).

pub mod app;
pub mod assist;
pub mod auth;
pub mod bot;
pub mod classify;
pub mod config;
pub mod index;
pub mod kb;
pub mod ops;
pub mod qa;
pub mod redact;
pub mod routing;
pub mod rpc;
pub mod store;
