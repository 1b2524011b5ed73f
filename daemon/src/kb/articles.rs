//! The articles of search hits as last read. A contact centre's questions repeat, so most
//! searches hit the same few hundred articles, and reading them cost every answer a trip
//! to the database and a decode of each row. An entry serves only while the knowledge
//! base's generation is the one it was read at (every write through this daemon moves it)
//! and for at most `MAX_AGE`, so that writes made through another daemon show up too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::store::ArticleRow;

const MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Entry {
    article: Arc<ArticleRow>,
    generation: u64,
    at: Instant,
}

pub struct Articles {
    /// `None`: nothing is kept (`kb.article_cache = 0`).
    cache: Option<Cache<String, Entry>>,
}

/// Tenant and id, with a separator neither may contain.
fn key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{0}{id}")
}

impl Articles {
    /// Holds up to `capacity` articles, the least used dropped first.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    /// The article as read at `generation`, if it was read then and recently enough.
    pub fn get(&self, tenant: &str, id: &str, generation: u64) -> Option<Arc<ArticleRow>> {
        let e = self.cache.as_ref()?.get(&key(tenant, id))?;
        (e.generation == generation && e.at.elapsed() < MAX_AGE).then_some(e.article)
    }

    /// Keeps `article`, read from the database at `generation` (taken before the read).
    pub fn put(&self, article: Arc<ArticleRow>, generation: u64) {
        if let Some(c) = &self.cache {
            c.insert(
                key(&article.tenant, &article.id),
                Entry {
                    article,
                    generation,
                    at: Instant::now(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(tenant: &str, id: &str) -> Arc<ArticleRow> {
        Arc::new(ArticleRow {
            tenant: tenant.into(),
            id: id.into(),
            ..Default::default()
        })
    }

    #[test]
    fn serves_an_article_only_at_the_generation_it_was_read_at() {
        let a = Articles::new(16);
        a.put(article("t1", "pin"), 3);
        assert_eq!(
            a.get("t1", "pin", 3).map(|x| x.id.clone()),
            Some("pin".into())
        );
        assert!(
            a.get("t1", "pin", 4).is_none(),
            "a write moved the generation"
        );
        assert!(a.get("t2", "pin", 3).is_none(), "another tenant's article");
        assert!(a.get("t1", "card", 3).is_none());
    }

    #[test]
    fn capacity_zero_keeps_nothing_and_the_size_is_bounded() {
        let none = Articles::new(0);
        none.put(article("t", "a"), 1);
        assert!(none.get("t", "a", 1).is_none());
        let small = Articles::new(8);
        for i in 0..100 {
            small.put(article("t", &format!("a{i}")), 1);
        }
        let held = (0..100)
            .filter(|i| small.get("t", &format!("a{i}"), 1).is_some())
            .count();
        assert!((1..=8).contains(&held), "{held} held");
    }
}
