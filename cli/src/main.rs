//! confidantctl: the operator CLI for confidantd.
//!
//! Talks to the daemon over its Unix socket or TCP (TLS where configured). Some commands
//! (`embed`, `models verify`) work offline on a model directory. Exit codes: 0 success,
//! 1 failure reported by the daemon or the command, 2 usage or connection problems.

mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "confidantctl", version, about = "Operate a Confidant daemon")]
pub struct Cli {
    /// Daemon address: unix:/path/to.sock, http://host:port or https://host:port.
    #[arg(
        long,
        global = true,
        env = "CONFIDANT_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// PEM CA certificate to verify an https:// daemon with.
    #[arg(long, global = true, env = "CONFIDANT_CA")]
    ca: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for daemons that require client certificates (mTLS).
    #[arg(
        long,
        global = true,
        env = "CONFIDANT_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<std::path::PathBuf>,
    #[arg(
        long,
        global = true,
        env = "CONFIDANT_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<std::path::PathBuf>,
    /// API token (for TCP; the Unix socket needs none).
    #[arg(long, global = true, env = "CONFIDANT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the API token from this file instead.
    #[arg(long, global = true, env = "CONFIDANT_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, uptime, models and the inference queue.
    Status,
    /// The daemon's gRPC health (exit 0 only when SERVING).
    Health,
    /// Model directories: verify offline, list or reload in the daemon.
    Models {
        #[command(subcommand)]
        command: commands::models::ModelsCommand,
    },
    /// API tokens: create (shown once), list, revoke.
    Tokens {
        #[command(subcommand)]
        command: commands::tokens::TokensCommand,
    },
    /// The knowledge base: import, list, show, delete, export, search, reindex, eval.
    Kb(commands::kb::KbArgs),
    /// Intent (and other) classifier heads: train on-prem, evaluate, predict.
    Intents {
        #[command(subcommand)]
        command: commands::intents::IntentsCommand,
    },
    /// QA scoring: score transcripts against the tenant's rubric.
    Qa(commands::qa::QaArgs),
    /// Agent assist: replay a transcript (JSON lines) through the live stream.
    Assist(commands::assist::AssistArgs),
    /// The bot as a front end calls it: answer a turn, type-ahead, feedback.
    Bot(commands::bot::BotArgs),
    /// Routing advice for a new contact, and where it was finally handled.
    Route(commands::bot::RouteArgs),
    /// Automated resolution rate, hand-offs by reason, first-try routing accuracy.
    Report(commands::bot::ReportArgs),
    /// Erase everything stored about one customer (conversations, decisions, routing).
    Purge(commands::bot::PurgeArgs),
    /// The audit trail, newest first.
    Audit(commands::tokens::AuditArgs),
    /// Embed texts offline with a model directory; one JSON line per text.
    Embed(commands::embed::EmbedArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("confidantctl: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Status => commands::admin::status(&cli).await,
            Command::Health => commands::admin::health(&cli).await,
            Command::Models { command } => commands::models::run(&cli, command).await,
            Command::Tokens { command } => commands::tokens::run(&cli, command).await,
            Command::Kb(args) => commands::kb::run(&cli, args).await,
            Command::Intents { command } => commands::intents::run(&cli, command).await,
            Command::Qa(args) => commands::qa::run(&cli, args).await,
            Command::Assist(args) => commands::assist::replay(&cli, args).await,
            Command::Bot(args) => commands::bot::run(&cli, args).await,
            Command::Route(args) => commands::bot::route(&cli, args).await,
            Command::Report(args) => commands::bot::report(&cli, args).await,
            Command::Purge(args) => commands::bot::purge(&cli, args).await,
            Command::Audit(args) => commands::tokens::audit(&cli, args).await,
            Command::Embed(args) => commands::embed::run(&cli, args),
            Command::Completions { shell } => {
                clap_complete::generate(
                    *shell,
                    &mut Cli::command(),
                    "confidantctl",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confidantctl: {e:#}");
            let usage = e.downcast_ref::<client::ConnectError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
