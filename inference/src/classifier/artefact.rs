//! The classifier artefact: a directory holding
//! - `classifier.toml`: task, version, the encoder it was trained against (fingerprint),
//!   the head's shape and labels, the calibration (temperature, out-of-scope score and
//!   threshold) and the SHA-256 of the weights;
//! - `head.safetensors`: the head's weights and the training vectors used by the
//!   nearest-neighbour out-of-scope score;
//! - `lexicon.json`: the lexical head's terms and their IDF weights (its weights are in
//!   `head.safetensors`), where the head has one;
//! - `metrics.json`: what training measured on its held-out split;
//! - `encoder/`: where the encoder was fine-tuned for this head (`--fine-tune`), that
//!   encoder as a model directory with its own manifest; the head is served on it.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::calibrate::OosScore;
use super::head::{Head, HeadKind, HeadOptions};
use super::lexical::{LexicalHead, LexicalOptions, Vocabulary};
use super::{Classifier, ClassifierError, EncoderRef, Result};

pub const CLASSIFIER_FILE: &str = "classifier.toml";
pub const WEIGHTS_FILE: &str = "head.safetensors";
pub const METRICS_FILE: &str = "metrics.json";
pub const LEXICON_FILE: &str = "lexicon.json";
pub const ENCODER_DIR: &str = "encoder";
const MEMORY_TENSOR: &str = "memory";
const LEXICAL_WEIGHT: &str = "lexical.weight";
const LEXICAL_BIAS: &str = "lexical.bias";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Info {
    pub format: u32,
    pub task: String,
    /// The first 12 hex digits of the weights' SHA-256: the same training, the same version.
    pub version: String,
    pub seed: u64,
    pub created_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeadMeta {
    pub kind: HeadKind,
    pub hidden: usize,
    pub labels: Vec<String>,
    /// The head has one more output than labels: the out-of-scope examples' class.
    pub reject_class: bool,
    pub weights_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OosMeta {
    pub score: OosScore,
    pub threshold: f32,
    /// Where the threshold came from: "held-out coverage", "held-out out-of-scope
    /// examples" or "operator".
    pub source: String,
    pub temperature: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LexicalMeta {
    /// The lexical head's logits are added to the vector head's times this.
    pub weight: f32,
    pub options: LexicalOptions,
    pub terms: usize,
    /// SHA-256 of `lexicon.json`.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub classifier: Info,
    pub encoder: EncoderRef,
    pub head: HeadMeta,
    pub out_of_scope: OosMeta,
    /// Absent in artefacts trained without a lexical head (and in those older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalMeta>,
    /// Present when `encoder` is a fine-tuned encoder kept in `encoder/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tuned: Option<FineTuned>,
}

/// How the encoder in `encoder/` was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuned {
    /// The encoder it was fine-tuned from.
    pub base: EncoderRef,
    /// How many top layers were trained.
    pub layers: usize,
    pub epochs: usize,
    pub examples: usize,
    pub seconds: f64,
    /// The task layer trained with the encoder, on the held-out split after the last
    /// epoch (the served heads are trained afterwards, on the tuned vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_accuracy: Option<f32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lexicon {
    terms: Vec<String>,
    idf: Vec<f32>,
}

impl Meta {
    pub(crate) fn new(
        task: &str,
        seed: u64,
        encoder: EncoderRef,
        head: HeadOptions,
        labels: Vec<String>,
        reject_class: bool,
        score: OosScore,
    ) -> Self {
        Self {
            classifier: Info {
                format: FORMAT,
                task: task.to_string(),
                version: String::new(),
                seed,
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            },
            encoder,
            head: HeadMeta {
                kind: head.kind,
                hidden: head.hidden,
                labels,
                reject_class,
                weights_sha256: String::new(),
            },
            out_of_scope: OosMeta {
                score,
                threshold: 0.0,
                source: String::new(),
                temperature: 1.0,
            },
            lexical: None,
            fine_tuned: None,
        }
    }
}

fn staging(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "classifier".into());
    dir.with_file_name(format!(".{name}.staging-{}", std::process::id()))
}

/// Returns the version and the weights' SHA-256 it wrote.
pub(crate) fn save(c: &Classifier, dir: &Path) -> Result<(String, String)> {
    let stage = staging(dir);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ClassifierError::io(p, e)
    };
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(io(&stage))?;
    }
    std::fs::create_dir_all(&stage).map_err(io(&stage))?;
    let mut tensors = c.head.to_tensors();
    if let Some(m) = &c.memory {
        tensors.insert(MEMORY_TENSOR.to_string(), m.tensor().clone());
    }
    let mut meta = c.meta.clone();
    if let (Some(lex), Some(lm)) = (&c.lexical, meta.lexical.as_mut()) {
        let v = &lex.vocabulary;
        tensors.insert(
            LEXICAL_WEIGHT.to_string(),
            candle_core::Tensor::from_slice(&lex.weights, (v.len(), lex.classes), &Device::Cpu)?,
        );
        tensors.insert(
            LEXICAL_BIAS.to_string(),
            candle_core::Tensor::from_slice(&lex.bias, lex.classes, &Device::Cpu)?,
        );
        let lexicon = serde_json::to_string(&Lexicon {
            terms: v.terms.clone(),
            idf: v.idf.clone(),
        })
        .map_err(|e| ClassifierError::artefact(dir, e.to_string()))?;
        let path = stage.join(LEXICON_FILE);
        std::fs::write(&path, lexicon).map_err(io(&path))?;
        lm.terms = v.len();
        lm.sha256 =
            crate::sha256_file(&path).map_err(|e| ClassifierError::artefact(dir, e.to_string()))?;
    }
    let weights = stage.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)?;
    let sha =
        crate::sha256_file(&weights).map_err(|e| ClassifierError::artefact(dir, e.to_string()))?;
    meta.classifier.version = sha.chars().take(12).collect();
    meta.head.weights_sha256 = sha;
    let toml =
        toml::to_string_pretty(&meta).map_err(|e| ClassifierError::artefact(dir, e.to_string()))?;
    let header = "# A Confidant classifier head (confidantctl intents train). Edit only the\n\
                  # out_of_scope.threshold; anything else invalidates the artefact.\n";
    std::fs::write(stage.join(CLASSIFIER_FILE), format!("{header}{toml}")).map_err(io(&stage))?;
    if let Some(m) = &c.metrics {
        let json = serde_json::to_string_pretty(m)
            .map_err(|e| ClassifierError::artefact(dir, e.to_string()))?;
        std::fs::write(stage.join(METRICS_FILE), json).map_err(io(&stage))?;
    }
    if let Some(src) = &c.encoder_dir {
        let to = stage.join(ENCODER_DIR);
        if c.encoder_staged {
            std::fs::rename(src, &to).map_err(io(src))?;
        } else {
            // A saved artefact's encoder (this one's, about to be replaced, or another's).
            copy_dir(src, &to)?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::rename(&stage, dir).map_err(io(dir))?;
    Ok((meta.classifier.version, meta.head.weights_sha256))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| ClassifierError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| ClassifierError::io(from, e))? {
        let entry = entry.map_err(|e| ClassifierError::io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| ClassifierError::io(&src, e))?;
        }
    }
    Ok(())
}

/// The fine-tuned encoder of an artefact, checked against the fingerprint it records
/// (its files' sums are checked again when the model is loaded).
fn encoder_of(dir: &Path, meta: &Meta) -> Result<Option<PathBuf>> {
    if meta.fine_tuned.is_none() {
        return Ok(None);
    }
    let enc = dir.join(ENCODER_DIR);
    let manifest = crate::Manifest::read(&enc)
        .map_err(|e| ClassifierError::artefact(dir, format!("{ENCODER_DIR}/: {e}")))?;
    let found = manifest.fingerprint();
    if found != meta.encoder.fingerprint {
        return Err(ClassifierError::artefact(
            dir,
            format!(
                "{ENCODER_DIR}/: fingerprint {found} is not the encoder the head was trained on ({})",
                meta.encoder.fingerprint
            ),
        ));
    }
    Ok(Some(enc))
}

pub(crate) fn load(dir: &Path) -> Result<Classifier> {
    let meta_path = dir.join(CLASSIFIER_FILE);
    let text =
        std::fs::read_to_string(&meta_path).map_err(|e| ClassifierError::io(&meta_path, e))?;
    let meta: Meta =
        toml::from_str(&text).map_err(|e| ClassifierError::artefact(&meta_path, e.to_string()))?;
    let bad = |m: String| ClassifierError::artefact(dir, m);
    if meta.classifier.format != FORMAT {
        return Err(bad(format!(
            "classifier.format {} is not supported (expected {FORMAT})",
            meta.classifier.format
        )));
    }
    let weights = dir.join(WEIGHTS_FILE);
    let sha = crate::sha256_file(&weights).map_err(|e| bad(e.to_string()))?;
    if sha != meta.head.weights_sha256 {
        return Err(bad(format!(
            "{WEIGHTS_FILE}: SHA-256 mismatch (classifier.toml {}, found {sha})",
            meta.head.weights_sha256
        )));
    }
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
    let layers = match meta.head.kind {
        HeadKind::Linear => 1,
        HeadKind::Mlp => 2,
    };
    let head =
        Head::from_tensors(&tensors, layers).map_err(|m| bad(format!("{WEIGHTS_FILE}: {m}")))?;
    let classes = meta.head.labels.len() + usize::from(meta.head.reject_class);
    if head.classes() != Some(classes) || head.input_dim() != Some(meta.encoder.dimension) {
        return Err(bad(format!(
            "{WEIGHTS_FILE}: head shape does not match {} labels over {} dimensions",
            classes, meta.encoder.dimension
        )));
    }
    let memory = tensors
        .get(MEMORY_TENSOR)
        .cloned()
        .map(super::few::Matrix::new);
    if meta.out_of_scope.score == OosScore::Nearest && memory.is_none() {
        return Err(bad(format!(
            "{WEIGHTS_FILE}: out_of_scope.score is nearest but the training vectors are missing"
        )));
    }
    let lexical = match &meta.lexical {
        Some(lm) => Some(load_lexical(dir, lm, &tensors, classes)?),
        None => None,
    };
    let metrics = std::fs::read_to_string(dir.join(METRICS_FILE))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    if !meta.out_of_scope.threshold.is_finite() {
        return Err(bad("out_of_scope.threshold must be a number".into()));
    }
    let encoder_dir = encoder_of(dir, &meta)?;
    Ok(Classifier {
        encoder_dir,
        encoder_staged: false,
        meta,
        head,
        lexical,
        memory,
        metrics,
    })
}

fn load_lexical(
    dir: &Path,
    lm: &LexicalMeta,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    classes: usize,
) -> Result<LexicalHead> {
    let bad = |m: String| ClassifierError::artefact(dir, m);
    let path = dir.join(LEXICON_FILE);
    let sha = crate::sha256_file(&path).map_err(|e| bad(e.to_string()))?;
    if sha != lm.sha256 {
        return Err(bad(format!(
            "{LEXICON_FILE}: SHA-256 mismatch (classifier.toml {}, found {sha})",
            lm.sha256
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ClassifierError::io(&path, e))?;
    let lexicon: Lexicon =
        serde_json::from_str(&text).map_err(|e| bad(format!("{LEXICON_FILE}: {e}")))?;
    let terms = lexicon.terms.len();
    if lexicon.idf.len() != terms || terms != lm.terms {
        return Err(bad(format!(
            "{LEXICON_FILE}: {terms} terms, {} IDF weights, classifier.toml says {}",
            lexicon.idf.len(),
            lm.terms
        )));
    }
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| bad(format!("{WEIGHTS_FILE}: tensor {name} is missing")))
    };
    let (w, b) = (get(LEXICAL_WEIGHT)?, get(LEXICAL_BIAS)?);
    if w.dims() != [terms, classes] || b.dims() != [classes] {
        return Err(bad(format!(
            "{WEIGHTS_FILE}: the lexical head's shape does not match {terms} terms and {classes} classes"
        )));
    }
    Ok(LexicalHead {
        vocabulary: Vocabulary::new(lexicon.terms, lexicon.idf),
        weights: w.flatten_all()?.to_vec1()?,
        bias: b.to_vec1()?,
        classes,
    })
}
