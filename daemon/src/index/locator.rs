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
//!
//! A language most of the tenant's articles share is checked after the search instead:
//! each point's language is held here too, the search asks for a few more hits and drops
//! the other languages' (searching again with the condition if too few are left).

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

/// Counts `scope` in or out of `tenant`'s; a tenant with nothing left goes.
fn tally(tenants: &mut HashMap<String, TenantScopes>, tenant: &str, scope: &Scope, up: bool) {
    if up {
        tenants
            .entry(tenant.to_string())
            .or_default()
            .count(scope, true);
    } else if let Some(t) = tenants.get_mut(tenant) {
        t.count(scope, false);
        if t.scopes == 0 {
            tenants.remove(tenant);
        }
    }
}

#[derive(Debug, Default)]
struct Article {
    /// Chunks `0..chunks` are in the index: the points to forget when it shrinks or goes.
    chunks: u32,
    scopes: Vec<Scope>,
}

/// Languages of other articles under this share of a tenant's are filtered after the
/// search rather than in it.
const MINORITY_SHARE: f64 = 0.1;

/// Where a point is: its article, its chunk and its article's language.
#[derive(Debug)]
struct Located {
    article: Arc<str>,
    chunk: u32,
    /// An index into `Locator::langs` plus one; 0 while a write is changing it.
    lang: u16,
}

/// A point's whereabouts, as searches read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Whereabouts<'a> {
    pub article: &'a str,
    pub chunk: u32,
    /// `None` while a write is changing the article's language.
    pub lang: Option<LangId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LangId(u16);

/// The language condition checked after the search: the language asked for, and how many
/// of the tenant's articles are in others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LangAfter {
    pub lang: LangId,
    pub others: u64,
}

/// About 60 bytes a chunk: 60 MB for a million.
#[derive(Debug, Default)]
pub(crate) struct Locator {
    points: HashMap<u128, Located>,
    articles: HashMap<(String, String), Article>,
    tenants: HashMap<String, TenantScopes>,
    langs: Vec<Arc<str>>,
    /// Points found at open without a tenant, article or chunk (no version writes such):
    /// while any is held, no condition is left out.
    strays: u64,
}

pub(crate) fn point_key(tenant: &str, article_id: &str, chunk: u32) -> u128 {
    u128::from_be_bytes(point_uuid(tenant, article_id, chunk))
}

impl Locator {
    fn lang_id(&mut self, lang: &str) -> u16 {
        if let Some(i) = self.langs.iter().position(|l| &**l == lang) {
            return i as u16 + 1;
        }
        if self.langs.len() >= usize::from(u16::MAX - 1) {
            return 0;
        }
        self.langs.push(Arc::from(lang));
        self.langs.len() as u16
    }

    pub(crate) fn lang_of(&self, id: LangId) -> Option<&str> {
        self.langs
            .get(usize::from(id.0).checked_sub(1)?)
            .map(|l| &**l)
    }

    /// A point found in the index (at open), with its own payload's scope.
    pub(crate) fn add(&mut self, tenant: &str, article_id: &str, chunk: u32, scope: Scope) {
        let lang = self.lang_id(&scope.lang);
        // One lookup per point: a million of them at open.
        let a = self
            .articles
            .entry((tenant.to_string(), article_id.to_string()))
            .or_default();
        a.chunks = a.chunks.max(chunk + 1);
        if !a.scopes.contains(&scope) {
            tally(&mut self.tenants, tenant, &scope, true);
            a.scopes.push(scope);
        }
        self.points.insert(
            point_key(tenant, article_id, chunk),
            Located {
                article: Arc::from(article_id),
                chunk,
                lang,
            },
        );
    }

    /// A point found at open whose payload does not say where it belongs.
    pub(crate) fn add_stray(&mut self) {
        self.strays += 1;
    }

    /// Before points of this scope are written: from now on searches keep the
    /// conditions it needs, and an article changing language has its points' language
    /// read from the index until the write is done.
    pub(crate) fn admit(&mut self, tenant: &str, article_id: &str, scope: Scope) {
        let a = self
            .articles
            .entry((tenant.to_string(), article_id.to_string()))
            .or_default();
        if a.scopes.contains(&scope) {
            return;
        }
        tally(&mut self.tenants, tenant, &scope, true);
        let changes_lang = a.scopes.iter().any(|s| s.lang != scope.lang);
        a.scopes.push(scope);
        if !changes_lang {
            return;
        }
        for c in 0..a.chunks {
            if let Some(p) = self.points.get_mut(&point_key(tenant, article_id, c)) {
                p.lang = 0;
            }
        }
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
                tally(&mut self.tenants, tenant, &s, false);
            }
        }
        if chunks == 0 {
            return;
        }
        for s in scopes {
            if !kept.contains(s) {
                tally(&mut self.tenants, tenant, s, true);
                kept.push(s.clone());
            }
        }
        let name: Arc<str> = Arc::from(article_id);
        let lang = match scopes {
            [first, rest @ ..] if rest.iter().all(|s| s.lang == first.lang) => {
                self.lang_id(&first.lang)
            }
            _ => 0,
        };
        for c in 0..chunks {
            self.points.insert(
                point_key(tenant, article_id, c),
                Located {
                    article: name.clone(),
                    chunk: c,
                    lang,
                },
            );
        }
        self.articles.insert(
            key,
            Article {
                chunks,
                scopes: kept,
            },
        );
    }

    /// The conditions of `f` that some point of the index could fail.
    pub(crate) fn needs(&self, f: &SearchFilter) -> Needs {
        let Some(t) = self.tenants.get(&f.tenant).filter(|_| self.strays == 0) else {
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

    /// When `f`'s language is better checked after the search: the tenant's other
    /// languages are a small minority of its articles (`needs` keeps the condition).
    pub(crate) fn lang_after(&self, f: &SearchFilter) -> Option<LangAfter> {
        let lang = f.lang.as_deref()?;
        let t = self.tenants.get(&f.tenant).filter(|_| self.strays == 0)?;
        let own = *t.langs.get(lang)?;
        let others = t.scopes.saturating_sub(own);
        if others as f64 > MINORITY_SHARE * t.scopes as f64 {
            return None;
        }
        let i = self.langs.iter().position(|l| &**l == lang)?;
        Some(LangAfter {
            lang: LangId(i as u16 + 1),
            others,
        })
    }

    /// Forgets one tenant's points, or every point.
    pub(crate) fn forget(&mut self, tenant: Option<&str>) {
        let Some(tenant) = tenant else {
            self.points.clear();
            self.articles.clear();
            self.tenants.clear();
            self.strays = 0;
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

    pub(crate) fn get(&self, point: u128) -> Option<Whereabouts<'_>> {
        self.points.get(&point).map(|p| Whereabouts {
            article: &p.article,
            chunk: p.chunk,
            lang: (p.lang > 0).then_some(LangId(p.lang)),
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(l: &Locator, key: u128) -> Option<(&str, u32)> {
        l.get(key).map(|w| (w.article, w.chunk))
    }

    fn lang_at(l: &Locator, key: u128) -> Option<&str> {
        l.get(key).and_then(|w| w.lang).and_then(|id| l.lang_of(id))
    }

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
        assert_eq!(at(&l, point_key("t1", "a", 2)), Some(("a", 2)));
        l.set("t1", "a", 1, &[plain()]);
        assert_eq!(at(&l, point_key("t1", "a", 2)), None);
        assert_eq!(at(&l, point_key("t1", "a", 0)), Some(("a", 0)));
        assert_eq!(l.len(), 4);
        l.set("t1", "b", 0, &[]);
        assert_eq!(at(&l, point_key("t1", "b", 0)), None);
        l.forget(Some("t1"));
        assert_eq!(l.len(), 1);
        assert_eq!(at(&l, point_key("t2", "a", 0)), Some(("a", 0)));
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
        assert_eq!(at(&l, point_key("t1", "a", 2)), None);
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
        l.add_stray();
        assert_eq!(
            l.needs(&f),
            Needs::ALL,
            "a point of unknown scope keeps everything"
        );
        l.strays = 0;
        assert!(
            l.needs(&search("t1", Some("zh"), None)).lang,
            "a language the tenant lacks is kept (and finds nothing)"
        );
    }

    #[test]
    fn a_minority_language_is_checked_after_and_a_changing_one_is_not_trusted() {
        let mut l = Locator::default();
        let zh = Scope::new("zh", VALID_FROM_OPEN, VALID_UNTIL_OPEN, true);
        for i in 0..10 {
            l.set("t1", &format!("en{i}"), 1, &[plain()]);
        }
        l.set("t1", "zh", 3, std::slice::from_ref(&zh));
        let en = search("t1", Some("en"), None);
        assert!(l.needs(&en).lang);
        let after = l.lang_after(&en).unwrap();
        assert_eq!(after.others, 1);
        assert_eq!(l.lang_of(after.lang), Some("en"));
        assert_eq!(lang_at(&l, point_key("t1", "zh", 2)), Some("zh"));
        assert_eq!(
            l.lang_after(&search("t1", Some("zh"), None)),
            None,
            "the minority's own searches keep the condition"
        );
        // One more article in another language crosses the 10% line.
        l.set(
            "t1",
            "fr",
            1,
            &[Scope::new("fr", VALID_FROM_OPEN, VALID_UNTIL_OPEN, true)],
        );
        assert_eq!(l.lang_after(&en), None);
        l.set("t1", "fr", 0, &[]);
        assert!(l.lang_after(&en).is_some());

        // en0 is rewritten in Chinese: between admitting the new scope and the end of the
        // write, its points' language is unknown (read from the index instead).
        l.admit("t1", "en0", zh.clone());
        assert_eq!(l.get(point_key("t1", "en0", 0)).unwrap().lang, None);
        l.set("t1", "en0", 1, std::slice::from_ref(&zh));
        assert_eq!(lang_at(&l, point_key("t1", "en0", 0)), Some("zh"));
        // Rewritten in the same language: nothing to distrust.
        l.admit("t1", "en1", Scope::new("en", 5, VALID_UNTIL_OPEN, true));
        assert_eq!(lang_at(&l, point_key("t1", "en1", 0)), Some("en"));
    }
}
