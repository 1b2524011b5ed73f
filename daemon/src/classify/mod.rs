//! Classifier heads served by the daemon: every sub-directory of `classifiers.dir` that
//! holds a `classifier.toml` is a head, named by the directory ("intent", "sentiment").
//! All are checked against the serving encoder's fingerprint when loaded, except a head
//! fine-tuned with its own encoder (`encoder/` in its directory), which is loaded with
//! the daemon's device and dtype and runs through the same inference queue; the set is
//! swapped whole on reload, and calls in flight finish on the heads they started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use confidant_inference::classifier::{CLASSIFIER_FILE, Classifier, ClassifierError, Prediction};
use confidant_inference::{Batcher, EmbeddingModel, InferenceError, InputKind, LoadOptions};

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("classifiers.dir {path}: {message}")]
    Dir { path: PathBuf, message: String },
    #[error("classifier {name:?}: {source}")]
    Load {
        name: String,
        #[source]
        source: ClassifierError,
    },
    #[error("classifier {name:?}: its fine-tuned encoder: {source}")]
    Encoder {
        name: String,
        #[source]
        source: InferenceError,
    },
    #[error(
        "no classifier named {0:?} is loaded (train one with `confidantctl intents train --out <classifiers.dir>/{0}` and reload)"
    )]
    NotFound(String),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
}

/// One loaded head and where it came from.
#[derive(Debug)]
pub struct Head {
    pub name: String,
    pub dir: PathBuf,
    pub classifier: Classifier,
    /// The head's own fine-tuned encoder; `None`: it reads the served encoder's vectors.
    pub encoder: Option<Arc<EmbeddingModel>>,
}

impl Head {
    /// The vectors this head reads for `texts`: the served encoder's (`shared`, already
    /// computed by the caller) or its own encoder's.
    async fn vectors(
        &self,
        batcher: &Batcher<EmbeddingModel>,
        texts: &[String],
        shared: Option<&[Vec<f32>]>,
    ) -> Result<Vec<Vec<f32>>, ClassifyError> {
        let model = match (&self.encoder, shared) {
            (None, Some(v)) => return Ok(v.to_vec()),
            (Some(m), _) => m.clone(),
            (None, None) => batcher.current(),
        };
        Ok(batcher
            .embed_with(model, texts, InputKind::Query)
            .await?
            .into_iter()
            .map(|e| e.vector)
            .collect())
    }
}

type Heads = Arc<BTreeMap<String, Arc<Head>>>;

pub struct Classifiers {
    heads: RwLock<Heads>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !n.starts_with('.')
}

/// Reads every head under `dir`. A missing directory is an empty set (a fresh install
/// has trained nothing yet); a head that cannot be loaded, or was trained against
/// another encoder, fails the whole load so that a stale head is never served silently.
pub fn load_dir(
    dir: &Path,
    encoder_fingerprint: &str,
    load: &LoadOptions,
) -> Result<BTreeMap<String, Arc<Head>>, ClassifyError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(ClassifyError::Dir {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| ClassifyError::Dir {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Staging directories of a save in progress start with a dot.
        if !path.is_dir() || !valid_name(&name) || !path.join(CLASSIFIER_FILE).is_file() {
            continue;
        }
        let classifier = Classifier::load_for(&path, encoder_fingerprint).map_err(|source| {
            ClassifyError::Load {
                name: name.clone(),
                source,
            }
        })?;
        let encoder = match classifier.encoder_dir() {
            Some(enc) => Some(Arc::new(EmbeddingModel::load(enc, load).map_err(|e| {
                ClassifyError::Encoder {
                    name: name.clone(),
                    source: e,
                }
            })?)),
            None => None,
        };
        tracing::info!(classifier = %name, task = classifier.task(), version = classifier.version(),
            labels = classifier.labels().len(), fine_tuned = encoder.is_some(), "classifier loaded");
        out.insert(
            name.clone(),
            Arc::new(Head {
                name,
                dir: path,
                classifier,
                encoder,
            }),
        );
    }
    Ok(out)
}

impl Classifiers {
    pub fn new(heads: BTreeMap<String, Arc<Head>>) -> Self {
        Self {
            heads: RwLock::new(Arc::new(heads)),
        }
    }

    fn current(&self) -> Heads {
        match self.heads.read() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn swap(&self, heads: BTreeMap<String, Arc<Head>>) {
        let heads = Arc::new(heads);
        match self.heads.write() {
            Ok(mut h) => *h = heads,
            Err(p) => *p.into_inner() = heads,
        }
    }

    pub fn get(&self, name: &str) -> Result<Arc<Head>, ClassifyError> {
        self.current()
            .get(name)
            .cloned()
            .ok_or_else(|| ClassifyError::NotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<Arc<Head>> {
        self.current().values().cloned().collect()
    }

    /// One text through head `name`, given its vector from the served encoder (a head
    /// with its own encoder embeds the text again with it); `None` when no such head is
    /// loaded (the jobs then run without it: a site may not have trained one yet).
    pub async fn guess(
        &self,
        batcher: &Batcher<EmbeddingModel>,
        name: &str,
        text: &str,
        vector: &[f32],
        top_k: usize,
    ) -> Result<Option<(Arc<Head>, Prediction)>, ClassifyError> {
        let texts = [text.to_string()];
        let shared = [vector.to_vec()];
        let guessed = self
            .guess_many(batcher, name, &texts, &shared, top_k)
            .await?;
        Ok(guessed.and_then(|(head, p)| p.into_iter().next().map(|p| (head, p))))
    }

    /// `guess` for several texts at once: a head with its own encoder embeds them in one
    /// job instead of one each.
    pub async fn guess_many(
        &self,
        batcher: &Batcher<EmbeddingModel>,
        name: &str,
        texts: &[String],
        vectors: &[Vec<f32>],
        top_k: usize,
    ) -> Result<Option<(Arc<Head>, Vec<Prediction>)>, ClassifyError> {
        let Ok(head) = self.get(name) else {
            return Ok(None);
        };
        if texts.is_empty() {
            return Ok(Some((head, Vec::new())));
        }
        let vectors = head.vectors(batcher, texts, Some(vectors)).await?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let p = head.classifier.predict(&refs, &vectors, top_k)?;
        Ok(Some((head, p)))
    }

    /// Embeds `texts` as queries through the batcher and classifies them with `name`.
    pub async fn classify(
        &self,
        batcher: &Batcher<EmbeddingModel>,
        name: &str,
        texts: &[String],
        top_k: usize,
    ) -> Result<(Arc<Head>, Vec<Prediction>), ClassifyError> {
        let head = self.get(name)?;
        let vectors = head.vectors(batcher, texts, None).await?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let predictions = head.classifier.predict(&refs, &vectors, top_k)?;
        for p in &predictions {
            let outcome = if p.out_of_scope {
                "out_of_scope"
            } else {
                "in_scope"
            };
            metrics::counter!("confidant_classifications_total", "classifier" => head.name.clone(), "outcome" => outcome)
                .increment(1);
        }
        Ok((head, predictions))
    }
}
