//! Which article and chunk each point of the embedded index holds, in memory, so that a
//! search reads no payloads: reading two payload fields of the ~80 candidates of a bot
//! answer's two searches cost 7% of its CPU (benches/README.md). Derived from the index
//! when it opens and kept in step by its writes; a point it does not know (a search racing
//! a write) has its payload read instead, so it is never the only record.
//!
//! It also knows, per tenant, which filter conditions its articles make necessary: a
//! search's filter is checked at every point the graph walk visits, and on a 115k-chunk
//! knowledge base the five conditions cost a third of the dense search (benches/README.md).
//! A condition every one of the tenant's points meets (no validity windows, no
//! channel-bound articles, one language, the only tenant) is left out. The counts are
//! exact: a write admits its articles' scope before their points go in and retires the
//! old scope only after the old points are gone, and a search holds the locator from the
//! choice of conditions to the end of its query.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ANY_CHANNEL, Point, SearchFilter, VALID_FROM_OPEN, VALID_UNTIL_OPEN, point_uuid};

/// What of an article's points the search filter can exclude.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    lang: String,
    /// A validity window other than the open one.
    windowed: bool,
    /// Shown on some channels only.
    bound: bool,
}

impl Scope {
    pub(crate) fn of(p: &Point) -> Self {
        Self::new(
            &p.lang,
            p.valid_from,
            p.valid_until,
            p.channels.is_empty() || p.channels.iter().any(|c| c == ANY_CHANNEL),
        )
    }

    /// `all_channels`: the point carries `ANY_CHANNEL` (or no channels at all).
    pub(crate) fn new(lang: &str, valid_from: i64, valid_until: i64, all_channels: bool) -> Self {
        Self {
            lang: lang.to_string(),
            windowed: valid_from != VALID_FROM_OPEN || valid_until != VALID_UNTIL_OPEN,
            bound: !all_channels,
        }
    }
}

/// The conditions a search must keep (the others every candidate meets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    pub tenant: bool,
    pub lang: bool,
    pub channel: bool,
    pub window: bool,
}

impl Needs {
    pub(crate) const ALL: Needs = Needs {
        tenant: true,
        lang: true,
        channel: true,
        window: true,
    };
}

#[derive(Debug, Default)]
struct TenantScopes {
    /// Admitted scopes (an article being rewritten counts its old and new one).
    scopes: u64,
    windowed: u64,
    bound: u64,
    langs: HashMap<String, u64>,
}

impl TenantScopes {
    fn count(&mut self, s: &Scope, up: bool) {
        let step = |n: &mut u64| *n = if up { *n + 1 } else { n.saturating_sub(1) };
        step(&mut self.scopes);
        if s.windowed {
            step(&mut self.windowed);
        }
        if s.bound {
            step(&mut self.bound);
        }
        let l = self.langs.entry(s.lang.clone()).or_insert(0);
        step(l);
        if *l == 0 {
            self.langs.remove(&s.lang);
        }
    }
}

#[derive(Debug, Default)]
struct Article {
    /// Chunks `0..chunks` are in the index: the points to forget when it shrinks or goes.
    chunks: u32,
    scopes: Vec<Scope>,
}

/// About 60 bytes a chunk: 60 MB for a million.
#[derive(Debug, Default)]
pub(crate) struct Locator {
    points: HashMap<u128, (Arc<str>, u32)>,
    articles: HashMap<(String, String), Article>,
    tenants: HashMap<String, TenantScopes>,
}

pub(crate) fn point_key(tenant: &str, article_id: &str, chunk: u32) -> u128 {
    u128::from_be_bytes(point_uuid(tenant, article_id, chunk))
}

impl Locator {
    /// A point found in the index (at open).
    pub(crate) fn add(&mut self, tenant: &str, article_id: &str, chunk: u32, scope: Scope) {
        self.admit(tenant, article_id, scope);
        let held = &mut self
            .articles
            .entry((tenant.to_string(), article_id.to_string()))
            .or_default()
            .chunks;
        *held = (*held).max(chunk + 1);
        self.points.insert(
            point_key(tenant, article_id, chunk),
            (Arc::from(article_id), chunk),
        );
    }

    /// Before points of this scope are written: from now on searches keep the
    /// conditions it needs.
    pub(crate) fn admit(&mut self, tenant: &str, article_id: &str, scope: Scope) {
        let a = self
            .articles
            .entry((tenant.to_string(), article_id.to_string()))
            .or_default();
        if a.scopes.contains(&scope) {
            return;
        }
        self.tenants
            .entry(tenant.to_string())
            .or_default()
            .count(&scope, true);
        a.scopes.push(scope);
    }

    /// After a write: the article holds chunks `0..chunks` (0: it is gone), of the
    /// `scopes` given; scopes it no longer has are retired.
    pub(crate) fn set(&mut self, tenant: &str, article_id: &str, chunks: u32, scopes: &[Scope]) {
        let key = (tenant.to_string(), article_id.to_string());
        let held = self.articles.remove(&key).unwrap_or_default();
        for c in chunks..held.chunks {
            self.points.remove(&point_key(tenant, article_id, c));
        }
        let mut kept = Vec::new();
        for s in held.scopes {
            if chunks > 0 && scopes.contains(&s) {
                kept.push(s);
            } else {
                self.retire(tenant, &s);
            }
        }
        if chunks == 0 {
            return;
        }
        for s in scopes {
            if !kept.contains(s) {
                self.tenants
                    .entry(tenant.to_string())
                    .or_default()
                    .count(s, true);
                kept.push(s.clone());
            }
        }
        let name: Arc<str> = Arc::from(article_id);
        for c in 0..chunks {
            self.points
                .insert(point_key(tenant, article_id, c), (name.clone(), c));
        }
        self.articles.insert(
            key,
            Article {
                chunks,
                scopes: kept,
            },
        );
    }

    fn retire(&mut self, tenant: &str, scope: &Scope) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.count(scope, false);
            if t.scopes == 0 {
                self.tenants.remove(tenant);
            }
        }
    }

    /// The conditions of `f` that some point of the index could fail.
    pub(crate) fn needs(&self, f: &SearchFilter) -> Needs {
        let Some(t) = self.tenants.get(&f.tenant) else {
            return Needs::ALL;
        };
        let only_lang = |l: &str| t.langs.len() == 1 && t.langs.contains_key(l);
        Needs {
            tenant: self.tenants.len() > 1,
            lang: f.lang.as_deref().is_some_and(|l| !only_lang(l)),
            channel: f.channel.is_some() && t.bound > 0,
            // Open windows hold for every instant the range conditions can be met at.
            window: t.windowed > 0 || !(VALID_FROM_OPEN..VALID_UNTIL_OPEN).contains(&f.at_ms),
        }
    }

    /// Forgets one tenant's points, or every point.
    pub(crate) fn forget(&mut self, tenant: Option<&str>) {
        let Some(tenant) = tenant else {
            self.points.clear();
            self.articles.clear();
            self.tenants.clear();
            return;
        };
        let points = &mut self.points;
        self.articles.retain(|(t, a), held| {
            if t != tenant {
                return true;
            }
            for c in 0..held.chunks {
                points.remove(&point_key(t, a, c));
            }
            false
        });
        self.tenants.remove(tenant);
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

    fn plain() -> Scope {
        Scope::new("en", VALID_FROM_OPEN, VALID_UNTIL_OPEN, true)
    }

    fn search(tenant: &str, lang: Option<&str>, channel: Option<&str>) -> SearchFilter {
        SearchFilter {
            tenant: tenant.into(),
            lang: lang.map(Into::into),
            channel: channel.map(Into::into),
            at_ms: 1_000,
        }
    }

    #[test]
    fn points_follow_articles_growing_shrinking_and_going() {
        let mut l = Locator::default();
        l.set("t1", "a", 3, &[plain()]);
        l.set("t1", "b", 2, &[plain()]);
        l.set("t2", "a", 1, &[plain()]);
        assert_eq!(l.len(), 6);
        assert_eq!(l.get(point_key("t1", "a", 2)), Some(("a", 2)));
        l.set("t1", "a", 1, &[plain()]);
        assert_eq!(l.get(point_key("t1", "a", 2)), None);
        assert_eq!(l.get(point_key("t1", "a", 0)), Some(("a", 0)));
        assert_eq!(l.len(), 4);
        l.set("t1", "b", 0, &[]);
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
        l.add("t1", "a", 2, plain());
        l.add("t1", "a", 0, plain());
        l.set("t1", "a", 1, &[plain()]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.get(point_key("t1", "a", 2)), None);
    }

    #[test]
    fn a_condition_is_left_out_only_while_every_point_meets_it() {
        let mut l = Locator::default();
        let f = search("t1", Some("en"), Some("chat"));
        assert_eq!(
            l.needs(&f),
            Needs::ALL,
            "an unknown tenant keeps everything"
        );
        l.set("t1", "a", 2, &[plain()]);
        let none = Needs {
            tenant: false,
            lang: false,
            channel: false,
            window: false,
        };
        assert_eq!(l.needs(&f), none);
        // Any instant the open window does not cover keeps the range conditions.
        let mut late = f.clone();
        late.at_ms = VALID_UNTIL_OPEN;
        assert!(l.needs(&late).window);

        let windowed = Scope::new("en", 500, VALID_UNTIL_OPEN, true);
        let bound = Scope::new("en", VALID_FROM_OPEN, VALID_UNTIL_OPEN, false);
        let zh = Scope::new("zh", VALID_FROM_OPEN, VALID_UNTIL_OPEN, true);
        // Admitted before its points are written: the condition is back at once.
        l.admit("t1", "b", windowed.clone());
        assert!(l.needs(&f).window);
        l.set("t1", "b", 1, std::slice::from_ref(&windowed));
        assert!(l.needs(&f).window);
        // Rewritten without the window: needed until the old points are gone.
        l.admit("t1", "b", plain());
        assert!(l.needs(&f).window);
        l.set("t1", "b", 1, &[plain()]);
        assert_eq!(l.needs(&f), none);

        l.admit("t1", "c", bound.clone());
        assert!(l.needs(&f).channel);
        assert!(!l.needs(&search("t1", Some("en"), None)).channel);
        l.set("t1", "c", 0, &[]);
        assert!(!l.needs(&f).channel);

        l.set("t1", "d", 1, &[zh]);
        assert!(l.needs(&f).lang);
        assert!(!l.needs(&search("t1", None, None)).lang);
        l.set("t1", "d", 0, &[]);
        assert!(!l.needs(&f).lang);

        l.admit("t2", "x", plain());
        assert!(l.needs(&f).tenant, "a second tenant brings the tenant back");
        l.forget(Some("t2"));
        assert!(!l.needs(&f).tenant);
        assert!(
            l.needs(&search("t1", Some("zh"), None)).lang,
            "a language the tenant lacks is kept (and finds nothing)"
        );
    }
}
