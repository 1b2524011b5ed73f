//! The state every service shares: the configuration in force, storage, the token cache
//! and the models.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use confidant_inference::{Batcher, EmbeddingModel, InferenceError, Scores};

use crate::assist::AssistPolicy;
use crate::auth::TokenCache;
use crate::bot::{BotPolicy, Suggester};
use crate::classify::{Classifiers, ClassifyError};
use crate::config::Config;
use crate::index::{EmbeddedIndex, IndexError, ServerIndex, ServerOptions, VectorIndex};
use crate::kb::{Kb, KbError};
use crate::qa::Rubrics;
use crate::redact::Redactor;
use crate::routing::{PolicyError, RoutingPolicy};
use crate::store::Store;

/// The compiled rules of the jobs (patterns, thresholds, queues), built from the config at
/// start and on reload, swapped whole.
pub struct Policies {
    pub assist: AssistPolicy,
    pub bot: BotPolicy,
    pub routing: RoutingPolicy,
    pub redactor: Redactor,
}

/// The thresholds for a model whose manifest has no `[scores]` (written before manifests
/// carried them): the values the daemon had before, measured for all-MiniLM-L6-v2, so that
/// an upgrade without re-running the installer changes nothing.
fn legacy_scores() -> Scores {
    Scores {
        answer: Some(0.6),
        answer_by_lang: [("zh".to_string(), 0.8)].into(),
        answer_margin: Some(0.06),
        suggest: Some(0.5),
        exemplar: Some(0.7),
    }
}

impl Policies {
    /// `scores`: the serving model's thresholds (its manifest's `[scores]`), which the
    /// config's own keys override.
    pub fn new(config: &Config, scores: &Scores) -> Result<Self, PolicyError> {
        let legacy;
        let scores = if *scores == Scores::default() {
            legacy = legacy_scores();
            &legacy
        } else {
            scores
        };
        let routing = RoutingPolicy::new(&config.routing)?;
        let bot = BotPolicy::new(&config.bot, &routing, scores)?;
        let redactor = Redactor::new(&config.redact.patterns).map_err(|e| PolicyError {
            key: format!("redact.patterns[{}]", e.index),
            message: e.to_string(),
        })?;
        Ok(Self {
            assist: AssistPolicy::new(&config.assist, scores)?,
            bot,
            routing,
            redactor,
        })
    }

    /// The thresholds in force, for the operator: they may come from the model's manifest.
    fn log(&self) {
        tracing::info!(
            // Debug prints an f32 as written (0.9), not widened to f64 (0.8999999761…).
            bot_min_score = ?self.bot.min_score,
            bot_min_margin = ?self.bot.min_margin,
            bot_min_score_by_lang = ?self.bot.min_score_by_lang,
            assist_min_score = ?self.assist.min_score(),
            "job thresholds"
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading the embedding model: {0}")]
    Model(#[from] InferenceError),
    /// The error names the index.path directory or the index.url server.
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("knowledge base: {0}")]
    Kb(#[from] KbError),
    #[error("{0}")]
    Classifiers(#[from] ClassifyError),
    #[error("config key {0}")]
    Policy(#[from] PolicyError),
}

/// Locks `<index.path>.lock` (a sibling of the directory, which a model change removes)
/// for as long as the file is held: a second daemon on the same embedded index is refused
/// before it can set the directory aside or open the engine's files under the first.
fn lock_index(dir: &Path) -> Result<File, StartError> {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let err = |message: String| IndexError::Open {
        path: dir.display().to_string(),
        message,
    };
    if let Some(parent) = lock.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| err(format!("{}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(err(format!(
            "in use by another process (another confidantd with this index.path?): {} is locked",
            lock.display()
        ))
        .into()),
        Err(TryLockError::Error(e)) => {
            Err(err(format!("cannot lock {}: {e}", lock.display())).into())
        }
    }
}

/// The index is derived from the database with one model: a different model (or a
/// missing or unreadable marker) means the vectors are meaningless, so the embedded
/// index's directory is set aside, and a Qdrant server gets a collection for the model;
/// either is filled from the database by the catch-up. The embedded index comes with its
/// lock, to hold while it is open.
fn open_index(
    config: &Config,
    model: &EmbeddingModel,
) -> Result<(Arc<dyn VectorIndex>, Option<File>), StartError> {
    let fingerprint = model.manifest().fingerprint();
    if config.index.backend == "qdrant" {
        // One collection per model: another model's vectors are never mixed in, and a new
        // collection is filled from the database by the catch-up.
        let collection = format!("{}-{}", config.index.collection, short(&fingerprint));
        tracing::info!(url = %config.index.url, %collection, "vector index on a Qdrant server");
        let options = ServerOptions {
            url: config.index.url.clone(),
            api_key: config.qdrant_api_key()?,
            collection,
            timeout: Duration::from_secs(config.index.timeout_seconds),
            tuning: config.index_tuning(),
        };
        return Ok((
            Arc::new(ServerIndex::open(&options, model.dimension())?),
            None,
        ));
    }
    let dir = &config.index.path;
    let lock = lock_index(dir)?;
    let marker = dir.join("confidant-model");
    let held = std::fs::read_to_string(&marker).ok();
    let io = |e: std::io::Error| IndexError::Open {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    if dir.exists() && held.as_deref().map(str::trim) != Some(fingerprint.as_str()) {
        tracing::warn!(
            path = %dir.display(),
            "the index was built with another model (or is incomplete): rebuilding it from the database"
        );
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    let index = EmbeddedIndex::open(dir, model.dimension(), &config.index_tuning())?;
    std::fs::write(&marker, format!("{fingerprint}\n")).map_err(io)?;
    Ok((Arc::new(index), Some(lock)))
}

/// Enough of a fingerprint to tell models apart in a collection name.
fn short(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

pub struct App {
    config: RwLock<Arc<Config>>,
    batcher: Arc<Batcher<EmbeddingModel>>,
    kb: Kb,
    classifiers: Classifiers,
    policies: RwLock<Arc<Policies>>,
    suggester: Suggester,
    rubrics: Rubrics,
    store: Store,
    tokens: Arc<TokenCache>,
    started: Instant,
    /// The embedded index's lock, released when the daemon exits.
    _index_lock: Option<File>,
}

impl App {
    /// Loads the configured model (blocking: call it off the async runtime) and starts the
    /// inference workers.
    pub fn start(
        config: Config,
        store: Store,
        tokens: Arc<TokenCache>,
    ) -> Result<Self, StartError> {
        let model = Arc::new(EmbeddingModel::load(
            &config.model.dir,
            &config.load_options(),
        )?);
        metrics::histogram!("confidant_model_load_seconds").record(model.load_seconds());
        let heads = crate::classify::load_dir(
            &config.classifiers.dir,
            &model.manifest().fingerprint(),
            &config.load_options(),
        )?;
        let (index, index_lock) = open_index(&config, &model)?;
        if model.manifest().scores == Scores::default() {
            tracing::warn!(
                dir = %config.model.dir.display(),
                "the model's manifest has no [scores]: the job thresholds are the built-in ones measured for all-MiniLM-L6-v2; re-run the model's installer to get its own"
            );
        }
        let policies = Policies::new(&config, &model.manifest().scores)?;
        policies.log();
        let batcher = Arc::new(Batcher::new(model, config.batcher())?);
        let kb = Kb::new(store.clone(), index, batcher.clone(), config.kb_settings())?;
        Ok(Self {
            config: RwLock::new(Arc::new(config)),
            batcher,
            kb,
            classifiers: Classifiers::new(heads),
            policies: RwLock::new(Arc::new(policies)),
            suggester: Suggester::default(),
            rubrics: Rubrics::default(),
            store,
            tokens,
            started: Instant::now(),
            _index_lock: index_lock,
        })
    }

    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn batcher(&self) -> &Batcher<EmbeddingModel> {
        &self.batcher
    }

    pub fn kb(&self) -> &Kb {
        &self.kb
    }

    pub fn classifiers(&self) -> &Classifiers {
        &self.classifiers
    }

    pub fn policies(&self) -> Arc<Policies> {
        match self.policies.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn suggester(&self) -> &Suggester {
        &self.suggester
    }

    pub fn rubrics(&self) -> &Rubrics {
        &self.rubrics
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Loads the models, classifier heads and job policies `config` names and swaps them
    /// in; on any failure the ones in service stay, untouched. A model with other weights would make the index's
    /// vectors meaningless, so it is refused here: changing the embedding model takes a
    /// restart, which rebuilds the index. Blocking: call it from `spawn_blocking`.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let model = Arc::new(EmbeddingModel::load(
            &config.model.dir,
            &config.load_options(),
        )?);
        let serving = self.batcher.current().manifest().fingerprint();
        if model.manifest().fingerprint() != serving {
            return Err(InferenceError::Config {
                file: config.model.dir.display().to_string(),
                message: "a different embedding model needs a restart (the knowledge-base index is rebuilt for it); reload only re-reads the same model".into(),
            }
            .into());
        }
        let heads =
            crate::classify::load_dir(&config.classifiers.dir, &serving, &config.load_options())?;
        let policies = Arc::new(Policies::new(&config, &model.manifest().scores)?);
        policies.log();
        metrics::histogram!("confidant_model_load_seconds").record(model.load_seconds());
        self.batcher.swap(model);
        self.classifiers.swap(heads);
        match self.policies.write() {
            Ok(mut p) => *p = policies,
            Err(p) => *p.into_inner() = policies,
        }
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(p) => *p.into_inner() = Arc::new(config),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_without_scores_keeps_the_thresholds_the_daemon_had() {
        let config = Config::from_parts("", std::iter::empty()).unwrap();
        let p = Policies::new(&config, &Scores::default()).unwrap();
        assert_eq!((p.bot.threshold("en"), p.bot.threshold("zh")), (0.6, 0.8));
        assert_eq!(p.assist.min_score(), 0.5);
        let e5 = Scores {
            answer: Some(0.9),
            ..Scores::default()
        };
        let p = Policies::new(&config, &e5).unwrap();
        assert_eq!((p.bot.threshold("en"), p.bot.threshold("zh")), (0.9, 0.9));
    }
}
