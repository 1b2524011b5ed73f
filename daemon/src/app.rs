//! The state every service shares: the configuration in force, storage, the token cache
//! and the models.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use confidant_inference::{Batcher, EmbeddingModel, InferenceError};

use crate::auth::TokenCache;
use crate::config::Config;
use crate::store::Store;

pub struct App {
    config: RwLock<Arc<Config>>,
    batcher: Batcher<EmbeddingModel>,
    store: Store,
    tokens: Arc<TokenCache>,
    started: Instant,
}

impl App {
    /// Loads the configured model (blocking: call it off the async runtime) and starts the
    /// inference worker.
    pub fn start(
        config: Config,
        store: Store,
        tokens: Arc<TokenCache>,
    ) -> Result<Self, InferenceError> {
        let model = Arc::new(EmbeddingModel::load(
            &config.model.dir,
            &config.load_options(),
        )?);
        metrics::histogram!("confidant_model_load_seconds").record(model.load_seconds());
        let batcher = Batcher::new(model, config.batcher())?;
        Ok(Self {
            config: RwLock::new(Arc::new(config)),
            batcher,
            store,
            tokens,
            started: Instant::now(),
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Loads the models `config` names and swaps them in; on any failure the models in
    /// service stay, untouched. Blocking: call it from `spawn_blocking`.
    pub fn reload(&self, config: Config) -> Result<(), InferenceError> {
        let model = Arc::new(EmbeddingModel::load(
            &config.model.dir,
            &config.load_options(),
        )?);
        metrics::histogram!("confidant_model_load_seconds").record(model.load_seconds());
        self.batcher.swap(model);
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(p) => *p.into_inner() = Arc::new(config),
        }
        Ok(())
    }
}
