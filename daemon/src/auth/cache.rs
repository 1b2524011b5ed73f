//! The in-memory view of live tokens, so that authentication never waits on the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::{Identity, Role, hash_token};
use crate::store::{Store, StoreError, now_ms};

pub struct TokenCache {
    store: Store,
    by_hash: RwLock<HashMap<String, (String, Identity)>>,
    used: Mutex<HashMap<String, i64>>,
}

impl TokenCache {
    pub async fn load(store: Store) -> Result<Arc<Self>, StoreError> {
        let cache = Arc::new(Self {
            store,
            by_hash: RwLock::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
        });
        cache.refresh().await?;
        Ok(cache)
    }

    /// Re-reads the live tokens from the database.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let tokens = self.store.list_tokens(None).await?;
        let map = tokens
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .map(|t| {
                let roles = t
                    .roles
                    .iter()
                    .filter_map(|r| r.parse::<Role>().ok())
                    .collect();
                let identity = Identity {
                    actor: format!("token:{}", t.id),
                    tenant: Some(t.tenant),
                    roles,
                };
                (t.token_hash, (t.id, identity))
            })
            .collect();
        match self.by_hash.write() {
            Ok(mut m) => *m = map,
            Err(p) => *p.into_inner() = map,
        }
        Ok(())
    }

    pub fn lookup(&self, secret: &str) -> Option<Identity> {
        let hash = hash_token(secret);
        let found = match self.by_hash.read() {
            Ok(m) => m.get(&hash).cloned(),
            Err(p) => p.into_inner().get(&hash).cloned(),
        };
        let (id, identity) = found?;
        if let Ok(mut used) = self.used.lock() {
            used.insert(id, now_ms());
        }
        Some(identity)
    }

    /// Writes the last-used times gathered since the previous flush.
    pub async fn flush_used(&self) -> Result<(), StoreError> {
        let used: Vec<(String, i64)> = match self.used.lock() {
            Ok(mut u) => u.drain().collect(),
            Err(_) => return Ok(()),
        };
        if used.is_empty() {
            return Ok(());
        }
        self.store.touch_tokens(&used).await
    }

    pub fn spawn_maintenance(self: &Arc<Self>, every: Duration) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = cache.flush_used().await {
                    tracing::warn!(error = %e, "recording token use failed");
                }
                if let Err(e) = cache.refresh().await {
                    tracing::warn!(error = %e, "refreshing tokens failed; keeping the previous set");
                }
            }
        });
    }
}
