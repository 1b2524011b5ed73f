//! The articles of search hits as last read. A contact centre's questions repeat, so most
//! searches hit the same few hundred articles, and reading them cost every answer a trip
//! to the database and a decode of each row. An entry serves only while the knowledge
//! base's generation is the one it was read at (every write through this daemon moves it)
//! and for at most `MAX_AGE`, so that writes made through another daemon show up too.
//! The cache is bounded by the articles' size, not their count: an article may hold a
//! body of up to `kb.max_body_chars`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::store::ArticleRow;

const MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Entry {
    article: Arc<ArticleRow>,
    generation: u64,
    at: Instant,
    /// The article's size in memory, roughly: its text and a fixed share for the rest.
    bytes: u64,
}

/// An entry weighs its size, so that `kb.article_cache_mb` bounds the memory held.
#[derive(Clone)]
struct BySize;

impl Weighter<String, Entry> for BySize {
    fn weight(&self, key: &String, e: &Entry) -> u64 {
        key.len() as u64 + e.bytes
    }
}

fn size(a: &ArticleRow) -> u64 {
    let lists = [&a.questions, &a.tags, &a.channels];
    let text = [&a.tenant, &a.id, &a.title, &a.answer, &a.body, &a.lang]
        .iter()
        .map(|s| s.len())
        .chain(lists.iter().flat_map(|l| l.iter().map(|s| s.len() + 24)))
        .chain([&a.status, &a.content_hash].iter().map(|s| s.len()))
        .sum::<usize>();
    (text + 256) as u64
}

pub struct Articles {
    /// `None`: nothing is kept (`kb.article_cache_mb = 0`).
    cache: Option<Cache<String, Entry, BySize>>,
}

/// Tenant and id, with a separator neither may contain.
fn key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{0}{id}")
}

impl Articles {
    /// Holds articles up to `bytes` in all, the least used dropped first.
    pub fn new(bytes: u64) -> Self {
        // The item estimate only sizes the tables: an FAQ article is a few kB.
        let items = usize::try_from(bytes / 4096).unwrap_or(usize::MAX).max(16);
        Self {
            cache: (bytes > 0).then(|| Cache::with_weighter(items, bytes, BySize)),
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
            let bytes = size(&article);
            c.insert(
                key(&article.tenant, &article.id),
                Entry {
                    article,
                    generation,
                    at: Instant::now(),
                    bytes,
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
        let a = Articles::new(1 << 20);
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
    fn size_zero_keeps_nothing_and_the_memory_held_is_bounded() {
        let none = Articles::new(0);
        none.put(article("t", "a"), 1);
        assert!(none.get("t", "a", 1).is_none());
        // 100 articles of 10 kB each in 100 kB: fewer than ten stay.
        let small = Articles::new(100_000);
        for i in 0..100 {
            let mut a = ArticleRow::clone(&article("t", &format!("a{i}")));
            a.body = "x".repeat(10_000);
            small.put(Arc::new(a), 1);
        }
        let held = (0..100)
            .filter(|i| small.get("t", &format!("a{i}"), 1).is_some())
            .count();
        assert!((1..10).contains(&held), "{held} held");
    }
}
