//! Reading the sentence-transformers configuration that sits beside the weights:
//! `modules.json` (is there a Normalize module?) and `<pooling dir>/config.json`.

use std::path::Path;

use serde::Deserialize;

use crate::manifest::Pooling;
use crate::{InferenceError, Result};

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// Pooling and normalisation as sentence-transformers would apply them, or `None` where the
/// directory has no sentence-transformers config (then the manifest must say).
pub(crate) struct StConfig {
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
}

pub(crate) fn read(dir: &Path) -> Result<StConfig> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(StConfig {
            pooling: None,
            normalize: None,
        });
    }
    let cfg_err = |file: &str, message: String| InferenceError::Config {
        file: file.to_string(),
        message,
    };
    let text =
        std::fs::read_to_string(&modules_path).map_err(|e| InferenceError::io(&modules_path, e))?;
    let modules: Vec<Module> =
        serde_json::from_str(&text).map_err(|e| cfg_err("modules.json", e.to_string()))?;
    let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
    let mut pooling = None;
    if let Some(m) = modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
        let rel = format!("{}/config.json", m.path);
        let path = dir.join(&rel);
        let text = std::fs::read_to_string(&path).map_err(|e| InferenceError::io(&path, e))?;
        let p: PoolingConfig =
            serde_json::from_str(&text).map_err(|e| cfg_err(&rel, e.to_string()))?;
        pooling = Some(
            match (p.pooling_mode_mean_tokens, p.pooling_mode_cls_token) {
                (true, false) => Pooling::Mean,
                (false, true) => Pooling::Cls,
                _ => {
                    return Err(cfg_err(
                    &rel,
                    "exactly one of pooling_mode_mean_tokens and pooling_mode_cls_token must be set".into(),
                ));
                }
            },
        );
        if p.pooling_mode_max_tokens || p.pooling_mode_mean_sqrt_len_tokens {
            return Err(cfg_err(
                &rel,
                "max and mean-sqrt-len pooling are not supported".into(),
            ));
        }
    }
    Ok(StConfig {
        pooling,
        normalize: Some(normalize),
    })
}
