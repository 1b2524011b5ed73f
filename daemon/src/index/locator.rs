//! Which article and chunk each point of the embedded index holds, in memory, so that a
//! search reads no payloads: reading two payload fields of the ~80 candidates of a bot
//! answer's two searches cost 7% of its CPU (benches/README.md). Derived from the index
//! when it opens and kept in step by its writes; a point it does not know (a search racing
//! a write) has its payload read instead, so it is never the only record.

use std::collections::HashMap;
use std::sync::Arc;

use super::point_uuid;

/// About 60 bytes a chunk: 60 MB for a million.
#[derive(Debug, Default)]
pub(crate) struct Locator {
    points: HashMap<u128, (Arc<str>, u32)>,
    /// How many chunks each (tenant, article) holds: the points to forget when it shrinks
    /// or goes.
    articles: HashMap<(String, String), u32>,
}

pub(crate) fn point_key(tenant: &str, article_id: &str, chunk: u32) -> u128 {
    u128::from_be_bytes(point_uuid(tenant, article_id, chunk))
}

impl Locator {
    /// A point found in the index (at open).
    pub(crate) fn add(&mut self, tenant: &str, article_id: &str, chunk: u32) {
        let held = self
            .articles
            .entry((tenant.to_string(), article_id.to_string()))
            .or_insert(0);
        *held = (*held).max(chunk + 1);
        self.points.insert(
            point_key(tenant, article_id, chunk),
            (Arc::from(article_id), chunk),
        );
    }

    /// The article now holds chunks `0..chunks` (0: it is gone).
    pub(crate) fn set(&mut self, tenant: &str, article_id: &str, chunks: u32) {
        let key = (tenant.to_string(), article_id.to_string());
        let held = self.articles.remove(&key).unwrap_or(0);
        for c in chunks..held {
            self.points.remove(&point_key(tenant, article_id, c));
        }
        if chunks == 0 {
            return;
        }
        let name: Arc<str> = Arc::from(article_id);
        for c in 0..chunks {
            self.points
                .insert(point_key(tenant, article_id, c), (name.clone(), c));
        }
        self.articles.insert(key, chunks);
    }

    /// Forgets one tenant's points, or every point.
    pub(crate) fn forget(&mut self, tenant: Option<&str>) {
        let Some(tenant) = tenant else {
            self.points.clear();
            self.articles.clear();
            return;
        };
        let points = &mut self.points;
        self.articles.retain(|(t, a), held| {
            if t != tenant {
                return true;
            }
            for c in 0..*held {
                points.remove(&point_key(t, a, c));
            }
            false
        });
    }

    pub(crate) fn get(&self, point: u128) -> Option<(&str, u32)> {
        self.points.get(&point).map(|(a, c)| (&**a, *c))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_follow_articles_growing_shrinking_and_going() {
        let mut l = Locator::default();
        l.set("t1", "a", 3);
        l.set("t1", "b", 2);
        l.set("t2", "a", 1);
        assert_eq!(l.len(), 6);
        assert_eq!(l.get(point_key("t1", "a", 2)), Some(("a", 2)));
        l.set("t1", "a", 1);
        assert_eq!(l.get(point_key("t1", "a", 2)), None);
        assert_eq!(l.get(point_key("t1", "a", 0)), Some(("a", 0)));
        assert_eq!(l.len(), 4);
        l.set("t1", "b", 0);
        assert_eq!(l.get(point_key("t1", "b", 0)), None);
        l.forget(Some("t1"));
        assert_eq!(l.len(), 1);
        assert_eq!(l.get(point_key("t2", "a", 0)), Some(("a", 0)));
        l.forget(None);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn points_found_at_open_are_forgotten_with_their_article() {
        let mut l = Locator::default();
        // Out of order, with a gap (a write cut off by a crash).
        l.add("t1", "a", 2);
        l.add("t1", "a", 0);
        l.set("t1", "a", 1);
        assert_eq!(l.len(), 1);
        assert_eq!(l.get(point_key("t1", "a", 2)), None);
    }
}
