use std::path::PathBuf;

use clap::Args;
use confidant_inference::{DeviceKind, EmbeddingModel, InputKind, LoadOptions};
use serde_json::json;

use crate::Cli;

#[derive(Args)]
pub struct EmbedArgs {
    /// The model directory (with confidant-model.toml).
    #[arg(long, env = "CONFIDANT_MODEL_DIR")]
    model_dir: PathBuf,
    /// Embed as passages to index rather than as queries.
    #[arg(long)]
    passage: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// The texts; one JSON line is printed for each.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(_cli: &Cli, args: &EmbedArgs) -> anyhow::Result<()> {
    let model = EmbeddingModel::load(
        &args.model_dir,
        &LoadOptions {
            device: args.device,
            dtype: None,
            ..Default::default()
        },
    )?;
    let kind = if args.passage {
        InputKind::Passage
    } else {
        InputKind::Query
    };
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    for (text, e) in texts.iter().zip(model.embed(&texts, kind)?) {
        println!(
            "{}",
            json!({"text": text, "tokens": e.tokens, "truncated": e.truncated, "embedding": e.vector})
        );
    }
    Ok(())
}
