//! Where sentence vectors come from: the model directory loaded in this process
//! (`--local`), or the daemon's Embed RPC, which runs on the daemon's device (its GPU when
//! it has one) and is the encoder the classifier will be served with.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use confidant_inference::classifier::EncoderRef;
use confidant_inference::{DeviceKind, EmbeddingModel, InputKind, LoadOptions};
use confidant_proto::v1 as pb;
use indicatif::ProgressBar;

use crate::{Cli, client};

const BATCH: usize = 64;

#[derive(clap::Args, Clone)]
pub struct EncoderArgs {
    /// Run the encoder in this process from --model-dir instead of through the daemon.
    #[arg(long)]
    pub local: bool,
    /// The model directory for --local (with confidant-model.toml).
    #[arg(long, env = "CONFIDANT_MODEL_DIR", required_if_eq("local", "true"))]
    pub model_dir: Option<PathBuf>,
    /// cpu, cuda or cuda:N (for --local).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
}

pub enum Encoder {
    Local(Box<EmbeddingModel>),
    Daemon {
        // Boxed: a tonic client is a few hundred bytes, the local variant a pointer.
        client: Box<pb::embedding_service_client::EmbeddingServiceClient<client::Conn>>,
        reference: EncoderRef,
    },
}

impl Encoder {
    pub async fn open(cli: &Cli, args: &EncoderArgs) -> anyhow::Result<Self> {
        if args.local {
            let dir = args
                .model_dir
                .as_ref()
                .context("--local needs --model-dir (or CONFIDANT_MODEL_DIR)")?;
            let model = EmbeddingModel::load(
                dir,
                &LoadOptions {
                    device: args.device,
                    dtype: None,
                    ..Default::default()
                },
            )?;
            return Ok(Self::Local(Box::new(model)));
        }
        let conn = client::connect(cli).await?;
        let mut admin = pb::admin_service_client::AdminServiceClient::new(conn.clone());
        let status = admin
            .status(pb::StatusRequest {})
            .await
            .context("asking the daemon which encoder it serves (needs an admin token or the local socket)")?
            .into_inner();
        let m = status
            .models
            .iter()
            .find(|m| m.role == "embedding")
            .context("the daemon reports no embedding model")?;
        Ok(Self::Daemon {
            client: Box::new(pb::embedding_service_client::EmbeddingServiceClient::new(
                conn,
            )),
            reference: EncoderRef {
                name: m.name.clone(),
                fingerprint: m.fingerprint.clone(),
                dimension: m.dimension as usize,
            },
        })
    }

    pub fn reference(&self) -> EncoderRef {
        match self {
            Self::Local(m) => EncoderRef {
                name: m.manifest().model.name.clone(),
                fingerprint: m.manifest().fingerprint(),
                dimension: m.dimension(),
            },
            Self::Daemon { reference, .. } => reference.clone(),
        }
    }

    /// Embeds as queries (utterances are what customers type), in batches.
    pub async fn embed(
        &mut self,
        texts: &[String],
        bar: Option<&ProgressBar>,
    ) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            match self {
                Self::Local(m) => {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    out.extend(
                        m.embed(&refs, InputKind::Query)?
                            .into_iter()
                            .map(|e| e.vector),
                    );
                }
                Self::Daemon { client, .. } => {
                    let mut delay = Duration::from_millis(50);
                    let resp = loop {
                        let req = pb::EmbedRequest {
                            texts: chunk.to_vec(),
                            kind: pb::InputKind::Query as i32,
                        };
                        match client.embed(req).await {
                            Ok(r) => break r.into_inner(),
                            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                                if delay > Duration::from_secs(10) {
                                    bail!("the daemon stayed overloaded: {}", s.message());
                                }
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                            Err(s) => return Err(s.into()),
                        }
                    };
                    out.extend(resp.embeddings.into_iter().map(|e| e.vector));
                }
            }
            if let Some(b) = bar {
                b.inc(chunk.len() as u64);
            }
        }
        Ok(out)
    }
}
