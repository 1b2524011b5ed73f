//! The model manifest (`confidant-model.toml`): what a model is and the SHA-256 of each file.
//! A model directory without one, or whose files do not match it, is refused.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{InferenceError, Result};

pub const MANIFEST_FILE: &str = "confidant-model.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    Bert,
    XlmRoberta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    Mean,
    Cls,
}

/// The `[model]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: Architecture,
    /// When absent, read from the sentence-transformers `1_Pooling/config.json`.
    pub pooling: Option<Pooling>,
    /// When absent, true if `modules.json` lists a Normalize module.
    pub normalize: Option<bool>,
    pub max_seq_length: usize,
    pub dimension: usize,
    #[serde(default)]
    pub languages: Vec<String>,
    /// Prepended to search queries (multilingual-e5 expects "query: ").
    #[serde(default)]
    pub query_prefix: String,
    /// Prepended to indexed passages (multilingual-e5 expects "passage: ").
    #[serde(default)]
    pub passage_prefix: String,
    #[serde(default)]
    pub source: Option<String>,
}

/// The `[scores]` table: what a cosine similarity means for this model. Models spread
/// their similarities differently (all-MiniLM puts unrelated questions near 0.1,
/// multilingual-e5 near 0.8), so a threshold only makes sense for the model it was measured
/// on. The jobs' thresholds default to these when their config keys are not set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// The dense similarity the bot needs to answer with an article (`bot.min_score`)…
    pub answer: Option<f32>,
    /// …per language where the model is weaker (`bot.min_score_by_lang`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answer_by_lang: BTreeMap<String, f32>,
    /// How far the best article must lead the runner-up (`bot.min_margin`).
    pub answer_margin: Option<f32>,
    /// The similarity an article needs to be suggested to an agent (`assist.min_score`).
    pub suggest: Option<f32>,
    /// The similarity at which a turn matches a QA rule's exemplar sentence (a rule's
    /// `min_similarity`).
    pub exemplar: Option<f32>,
}

impl Scores {
    fn validate(&self) -> std::result::Result<(), String> {
        let named = [
            ("answer", self.answer),
            ("answer_margin", self.answer_margin),
            ("suggest", self.suggest),
            ("exemplar", self.exemplar),
        ];
        let by_lang = self
            .answer_by_lang
            .iter()
            .map(|(lang, v)| (format!("answer_by_lang.{lang}"), Some(*v)));
        let named = named.into_iter().map(|(k, v)| (k.to_string(), v));
        for (key, value) in named.chain(by_lang) {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(format!("scores.{key} = {v}: must be between 0 and 1"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: ModelInfo,
    #[serde(default)]
    pub scores: Scores,
    /// Relative path → lowercase hex SHA-256.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| InferenceError::Manifest {
            path: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| InferenceError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        manifest.validate(&path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| InferenceError::Manifest {
            path: path.to_path_buf(),
            message,
        };
        if self.model.dimension == 0 {
            return Err(bad("model.dimension must be positive".into()));
        }
        if self.model.max_seq_length < 4 {
            return Err(bad("model.max_seq_length must be at least 4".into()));
        }
        if self.files.is_empty() {
            return Err(bad("files: the manifest lists no files".into()));
        }
        self.scores.validate().map_err(bad)?;
        for (file, sum) in &self.files {
            let rel = Path::new(file);
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(bad(format!(
                    "files.\"{file}\": must be a relative path inside the model directory"
                )));
            }
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("files.\"{file}\": not a SHA-256 hex digest")));
            }
        }
        Ok(())
    }

    /// Checks every listed file against its SHA-256; the error names the first file at fault.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        for (file, expected) in &self.files {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(InferenceError::FileMissing { file: file.clone() });
            }
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(InferenceError::ChecksumMismatch {
                    file: file.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// A stable fingerprint of the model: the SHA-256 of the sorted file sums. Classifiers
    /// record it so that one trained against another encoder is refused.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (file, sum) in &self.files {
            h.update(file.as_bytes());
            h.update(b"\0");
            h.update(sum.to_ascii_lowercase().as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }

    pub fn lists(&self, file: &str) -> bool {
        self.files.contains_key(file)
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| InferenceError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| InferenceError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_model(dir: &Path, body: &[u8]) -> String {
        std::fs::write(dir.join("weights.bin"), body).unwrap();
        let sum = hex::encode(Sha256::digest(body));
        let manifest = format!(
            "[model]\nname = \"t\"\narchitecture = \"bert\"\nmax_seq_length = 16\ndimension = 4\n\n[files]\n\"weights.bin\" = \"{sum}\"\n"
        );
        std::fs::write(dir.join(MANIFEST_FILE), manifest).unwrap();
        sum
    }

    #[test]
    fn verify_accepts_matching_and_names_the_tampered_file() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), b"abc");
        let m = Manifest::read(dir.path()).unwrap();
        m.verify(dir.path()).unwrap();
        std::fs::write(dir.path().join("weights.bin"), b"abd").unwrap();
        match m.verify(dir.path()) {
            Err(InferenceError::ChecksumMismatch { file, .. }) => assert_eq!(file, "weights.bin"),
            other => panic!("expected mismatch, got {other:?}"),
        }
        std::fs::remove_file(dir.path().join("weights.bin")).unwrap();
        assert!(matches!(
            m.verify(dir.path()),
            Err(InferenceError::FileMissing { .. })
        ));
    }

    #[test]
    fn rejects_paths_escaping_the_directory_and_bad_digests() {
        let dir = tempfile::tempdir().unwrap();
        let bad = "[model]\nname=\"t\"\narchitecture=\"bert\"\nmax_seq_length=16\ndimension=4\n[files]\n\"../etc/passwd\" = \"00\"\n";
        std::fs::write(dir.path().join(MANIFEST_FILE), bad).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("../etc/passwd"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let bad = "[model]\nname=\"t\"\narchitecture=\"bert\"\nmax_seq_length=16\ndimension=4\npoolng=\"mean\"\n[files]\n";
        std::fs::write(dir.path().join(MANIFEST_FILE), bad).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("poolng"), "{err}");
    }

    #[test]
    fn fingerprint_changes_with_any_file() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), b"abc");
        let a = Manifest::read(dir.path()).unwrap().fingerprint();
        write_model(dir.path(), b"xyz");
        let b = Manifest::read(dir.path()).unwrap().fingerprint();
        assert_ne!(a, b);
    }
}
