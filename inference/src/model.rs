//! A sentence-embedding model loaded from a local directory: encoder + tokenizer + pooling.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{bert, xlm_roberta};

use crate::device::{DeviceKind, parse_dtype};
use crate::manifest::{Architecture, Manifest, Pooling};
use crate::native::{NativeEncoder, Precision, Shape};
use crate::pooling::{l2_normalize, pool};
use crate::tokenize::{Encoded, InputKind, TextTokenizer};
use crate::{InferenceError, Result, st_config};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub device: DeviceKind,
    /// "f32", "f16", "bf16" or (CPU only) "int8"; `None` picks the device's default (f32
    /// on CPU).
    pub dtype: Option<String>,
    /// Run Candle's encoder on CPU too, instead of the native one (for comparisons).
    pub candle: bool,
    /// Share a lone text's layers with kept threads on the packed f32 kernel too (they
    /// always are on `gemm`'s): lower latency at low load on slow CPUs, for more CPU per
    /// text (benches/README.md, "A lone text on both cores of a slow CPU").
    pub share_lone_texts: bool,
}

/// One text's embedding, with what the tokenizer did to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens the model saw, special tokens included.
    pub tokens: usize,
    /// True when the text was longer than the model's max_seq_length and was cut.
    pub truncated: bool,
}

enum Encoder {
    Candle(CandleEncoder),
    /// Our packed CPU encoder (see `native`): what CPU models run on when their activation
    /// is the exact GELU, in f32 or (with AMX) bf16.
    Native(NativeEncoder),
}

enum CandleEncoder {
    Bert(bert::BertModel),
    XlmRoberta(xlm_roberta::XLMRobertaModel),
}

pub struct EmbeddingModel {
    dir: PathBuf,
    manifest: Manifest,
    encoder: Encoder,
    tokenizer: TextTokenizer,
    device: Device,
    dtype: DType,
    pooling: Pooling,
    normalize: bool,
    pad_id: u32,
    load_seconds: f64,
    engine: &'static str,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("dir", &self.dir)
            .field("name", &self.manifest.model.name)
            .field("dtype", &self.dtype)
            .finish()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<T> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| InferenceError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| InferenceError::Config {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// The native encoder from the config fields BERT and XLM-R share:
/// `[hidden, heads, intermediate, layers]`, and the word, position and token-type table rows.
fn native_encoder(
    vb: &VarBuilder,
    [hidden, heads, intermediate, layers]: [usize; 4],
    eps: f64,
    position_offset: usize,
    tables: [usize; 3],
    precision: Precision,
) -> Result<Encoder> {
    let shape = Shape {
        hidden,
        heads,
        intermediate,
        layers,
        eps: eps as f32,
        position_offset,
    };
    Ok(Encoder::Native(NativeEncoder::load(
        vb, shape, tables, precision,
    )?))
}

fn weights(
    dir: &Path,
    manifest: &Manifest,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    if manifest.lists("model.safetensors") {
        let path = dir.join("model.safetensors");
        // SAFETY: the file was just checked against its SHA-256 and model directories are
        // read-only to the daemon (systemd ReadOnlyPaths); mapping avoids a copy of the weights.
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device)? };
        Ok(vb)
    } else if manifest.lists("pytorch_model.bin") {
        Ok(VarBuilder::from_pth(
            dir.join("pytorch_model.bin"),
            dtype,
            device,
        )?)
    } else {
        Err(InferenceError::Manifest {
            path: dir.join(crate::MANIFEST_FILE),
            message: "files: lists neither model.safetensors nor pytorch_model.bin".into(),
        })
    }
}

impl EmbeddingModel {
    /// Loads and verifies a model directory. Every file listed in the manifest is checked
    /// against its SHA-256 before anything is parsed.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let started = Instant::now();
        if !dir.is_dir() {
            return Err(InferenceError::ModelDirMissing(dir.to_path_buf()));
        }
        let manifest = Manifest::read(dir)?;
        manifest.verify(dir)?;
        for required in ["config.json", "tokenizer.json"] {
            if !manifest.lists(required) {
                return Err(InferenceError::Manifest {
                    path: dir.join(crate::MANIFEST_FILE),
                    message: format!("files: {required} must be listed"),
                });
            }
        }
        let st = st_config::read(dir)?;
        let info = &manifest.model;
        let pooling = info.pooling.or(st.pooling).unwrap_or(Pooling::Mean);
        let normalize = info.normalize.or(st.normalize).unwrap_or(true);

        let device = opts.device.open()?;
        // int8 is the native CPU encoder's alone: everything around its linear layers,
        // and Candle where it is asked for, stays f32.
        let int8 = opts.dtype.as_deref() == Some("int8");
        let dtype = match &opts.dtype {
            _ if int8 => DType::F32,
            Some(s) => parse_dtype(s)?,
            None => opts.device.default_dtype(),
        };
        if int8 && opts.device != DeviceKind::Cpu {
            return Err(InferenceError::invalid(
                "dtype",
                "int8 runs on CPU only: use f16 or bf16 on a GPU",
            ));
        }
        // The native encoder reads f32 weights whatever it computes in.
        let native = match opts.device {
            DeviceKind::Cpu if !opts.candle && int8 => Precision::int8().or_else(|| {
                tracing::warn!(
                    "dtype int8 needs AVX2 or AVX-512-VNNI, which this CPU lacks: running f32"
                );
                Some(Precision::F32)
            }),
            DeviceKind::Cpu if !opts.candle => Precision::for_dtype(dtype),
            _ => None,
        };
        let vb = weights(
            dir,
            &manifest,
            native.map_or(dtype, |_| DType::F32),
            &device,
        )?;
        let (mut encoder, pad_id, max_positions) = match info.architecture {
            Architecture::Bert => {
                let cfg: bert::Config = read_json(dir, "config.json")?;
                let pad = cfg.pad_token_id as u32;
                let max_pos = cfg.max_position_embeddings;
                let encoder = match native.filter(|_| cfg.hidden_act == bert::HiddenAct::Gelu) {
                    Some(precision) => {
                        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
                            vb.pp("bert")
                        } else {
                            vb
                        };
                        native_encoder(
                            &vb,
                            [
                                cfg.hidden_size,
                                cfg.num_attention_heads,
                                cfg.intermediate_size,
                                cfg.num_hidden_layers,
                            ],
                            cfg.layer_norm_eps,
                            0,
                            [
                                cfg.vocab_size,
                                cfg.max_position_embeddings,
                                cfg.type_vocab_size,
                            ],
                            precision,
                        )?
                    }
                    None => Encoder::Candle(CandleEncoder::Bert(bert::BertModel::load(vb, &cfg)?)),
                };
                (encoder, pad, max_pos)
            }
            Architecture::XlmRoberta => {
                let cfg: xlm_roberta::Config = read_json(dir, "config.json")?;
                let vb = if vb.contains_tensor("roberta.embeddings.word_embeddings.weight") {
                    vb.pp("roberta")
                } else {
                    vb
                };
                // XLM-R positions start after the padding index.
                let max_pos = cfg
                    .max_position_embeddings
                    .saturating_sub(cfg.pad_token_id as usize + 1);
                let pad = cfg.pad_token_id;
                let gelu = cfg.hidden_act == candle_nn::Activation::Gelu;
                let encoder = match native.filter(|_| gelu) {
                    Some(precision) => native_encoder(
                        &vb,
                        [
                            cfg.hidden_size,
                            cfg.num_attention_heads,
                            cfg.intermediate_size,
                            cfg.num_hidden_layers,
                        ],
                        cfg.layer_norm_eps,
                        cfg.pad_token_id as usize + 1,
                        [
                            cfg.vocab_size,
                            cfg.max_position_embeddings,
                            cfg.type_vocab_size,
                        ],
                        precision,
                    )?,
                    None => Encoder::Candle(CandleEncoder::XlmRoberta(
                        xlm_roberta::XLMRobertaModel::new(&cfg, vb)?,
                    )),
                };
                (encoder, pad, max_pos)
            }
        };
        if let Encoder::Native(n) = &mut encoder {
            n.share_packed_passes(opts.share_lone_texts);
        }
        let engine = match &encoder {
            Encoder::Native(n) => n.precision().engine(),
            _ => "candle",
        };
        if info.max_seq_length > max_positions {
            return Err(InferenceError::Manifest {
                path: dir.join(crate::MANIFEST_FILE),
                message: format!(
                    "model.max_seq_length {} exceeds the encoder's {} positions",
                    info.max_seq_length, max_positions
                ),
            });
        }
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), info.max_seq_length)?;
        let load_seconds = started.elapsed().as_secs_f64();
        tracing::info!(model = %info.name, dir = %dir.display(), device = %opts.device, ?dtype, engine, load_seconds, "model loaded");
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            encoder,
            tokenizer,
            device,
            dtype,
            pooling,
            normalize,
            pad_id,
            load_seconds,
            engine,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn dimension(&self) -> usize {
        self.manifest.model.dimension
    }

    pub fn load_seconds(&self) -> f64 {
        self.load_seconds
    }

    /// Which encoder runs the model: "candle", "native-f32", "native-amx-bf16" or
    /// "native-avx512-bf16".
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    pub(crate) fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub(crate) fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The native encoder's shape; `None` when Candle's encoder runs the model.
    pub(crate) fn native_shape(&self) -> Option<&Shape> {
        match &self.encoder {
            Encoder::Native(n) => Some(n.shape()),
            Encoder::Candle(_) => None,
        }
    }

    /// Every token's hidden state after the first `layers` layers, texts packed one after
    /// another (`[Σ len, hidden]`): the frozen part of a fine-tune. Native encoder only.
    pub(crate) fn hidden_after(&self, batch: &[&Encoded], layers: usize) -> Result<Vec<f32>> {
        match &self.encoder {
            Encoder::Native(n) => n.forward_upto(batch, crate::cpu_threads(), layers),
            Encoder::Candle(_) => Err(InferenceError::invalid(
                "device",
                "hidden states are read from the CPU's native encoder only",
            )),
        }
    }

    /// Tokenises one text, with the manifest's query or passage prefix.
    pub fn tokenize(&self, text: &str, kind: InputKind) -> Result<Encoded> {
        if text.trim().is_empty() {
            return Err(InferenceError::invalid("text", "must not be empty"));
        }
        let info = &self.manifest.model;
        let prefix = match kind {
            InputKind::Query => &info.query_prefix,
            InputKind::Passage => &info.passage_prefix,
        };
        if prefix.is_empty() {
            self.tokenizer.encode(text)
        } else {
            self.tokenizer.encode(&format!("{prefix}{text}"))
        }
    }

    /// Runs one padded batch through the encoder; returns one vector per input.
    pub fn forward(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        self.forward_threads(batch, crate::cpu_threads())
    }

    /// [`Self::forward`] with the native CPU encoder splitting its work over `threads`
    /// threads (Candle's encoder and GPUs keep their own parallelism).
    pub fn forward_threads(&self, batch: &[&Encoded], threads: usize) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let candle = match &self.encoder {
            Encoder::Native(native) => return self.forward_native(native, batch, threads),
            Encoder::Candle(c) => c,
        };
        let max_len = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let n = batch.len();
        let mut ids = Vec::with_capacity(n * max_len);
        let mut types = Vec::with_capacity(n * max_len);
        let mut mask = Vec::with_capacity(n * max_len);
        for e in batch {
            let pad = max_len - e.len();
            ids.extend_from_slice(&e.ids);
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            types.extend_from_slice(&e.type_ids);
            types.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(1u32, e.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let ids = Tensor::from_vec(ids, (n, max_len), &self.device)?;
        let types = Tensor::from_vec(types, (n, max_len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, max_len), &self.device)?;
        let hidden = match candle {
            CandleEncoder::Bert(m) => m.forward(&ids, &types, Some(&mask))?,
            CandleEncoder::XlmRoberta(m) => m.forward(&ids, &mask, &types, None, None, None)?,
        };
        let pooled = pool(&hidden, &mask.to_dtype(hidden.dtype())?, self.pooling)?;
        let out = if self.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled.to_dtype(DType::F32)?
        };
        Ok(out.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }

    fn forward_native(
        &self,
        native: &NativeEncoder,
        batch: &[&Encoded],
        threads: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let hidden = native.forward(batch, threads)?;
        let h = self.dimension();
        let mut out = Vec::with_capacity(batch.len());
        let mut row = 0;
        for e in batch {
            let rows = &hidden[row * h..(row + e.len()) * h];
            row += e.len();
            let mut v = match self.pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut v = vec![0f32; h];
                    for r in rows.chunks_exact(h) {
                        for (a, b) in v.iter_mut().zip(r) {
                            *a += b;
                        }
                    }
                    let n = e.len().max(1) as f32;
                    v.iter_mut().for_each(|a| *a /= n);
                    v
                }
            };
            if self.normalize {
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Embeds texts directly, without the batcher (for the CLI and benchmarks).
    pub fn embed(&self, texts: &[&str], kind: InputKind) -> Result<Vec<Embedding>> {
        let encoded = texts
            .iter()
            .map(|t| self.tokenize(t, kind))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        let vectors = self.forward(&refs)?;
        Ok(vectors
            .into_iter()
            .zip(&encoded)
            .map(|(vector, e)| Embedding {
                vector,
                tokens: e.len(),
                truncated: e.truncated,
            })
            .collect())
    }
}
