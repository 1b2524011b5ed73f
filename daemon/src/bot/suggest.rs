//! Type-ahead: the published articles' question variants, held in memory per tenant and
//! matched against what the customer has typed so far. No model call: it has to keep up
//! with keystrokes. The cache reloads when the knowledge base changes (its generation) and
//! at least every `MAX_AGE`, so that writes made through another daemon show up too.
//!
//! One caller at a time reloads a tenant: with ~26k questions a reload reads every
//! article, and when every caller did it at once (a keystroke storm as the cache aged) the
//! database pool ran dry and memory grew to 12 GB. After a local write callers wait for
//! the one reload; when the cache has only aged, the others keep using it meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::index::{VALID_FROM_OPEN, VALID_UNTIL_OPEN};
use crate::kb::{Kb, KbError};
use crate::store::now_ms;

use super::policy::is_cjk;

const MAX_AGE: Duration = Duration::from_secs(30);
const PAGE: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub article_id: String,
    pub title: String,
    pub question: String,
    /// Lower-cased, whitespace collapsed.
    norm: String,
    /// `norm`'s words (split at anything not alphanumeric), split once at load.
    words: Vec<Box<str>>,
    lang: String,
    channels: Vec<String>,
    valid_from: i64,
    valid_until: i64,
}

struct Loaded {
    generation: u64,
    at: Instant,
    entries: Arc<Vec<Entry>>,
}

#[derive(Default)]
pub struct Suggester {
    tenants: Mutex<HashMap<String, Loaded>>,
    /// Held by the caller that reloads; per tenant.
    reloading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn words_of(norm: &str) -> Vec<Box<str>> {
    norm.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(Box::from)
        .collect()
}

/// What was typed, taken apart once per call rather than once per question.
struct Typed<'a> {
    text: &'a str,
    /// Words without surrounding punctuation; the last one may be unfinished.
    words: Vec<&'a str>,
    finished: bool,
    cjk: bool,
}

impl<'a> Typed<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            words: text
                .split(' ')
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
                .filter(|w| !w.is_empty())
                .collect(),
            finished: text.ends_with(' '),
            cjk: text.chars().any(is_cjk),
        }
    }
}

/// How well a question (normalised, and its words) matches what was typed; `None`: not
/// at all. Higher is better: the question starts with the text, then every typed word
/// starts a word of the question (the last one may be unfinished), then a substring
/// (Chinese).
fn score(question: &str, q_words: &[Box<str>], typed: &Typed) -> Option<u32> {
    if question.starts_with(typed.text) {
        return Some(3);
    }
    let n = typed.words.len();
    let all_words = n > 0
        && typed.words.iter().enumerate().all(|(i, w)| {
            let last = i + 1 == n && !typed.finished;
            q_words
                .iter()
                .any(|q| if last { q.starts_with(w) } else { &**q == *w })
        });
    if all_words {
        return Some(2);
    }
    if typed.cjk && question.contains(typed.text) {
        return Some(2);
    }
    None
}

impl Suggester {
    /// The cached entries, and whether they are current (same generation, younger than
    /// `MAX_AGE`); `None` before the first load.
    fn cached(&self, tenant: &str, generation: u64) -> Option<(Arc<Vec<Entry>>, bool, bool)> {
        let t = self.tenants.lock().ok()?;
        let l = t.get(tenant)?;
        let same = l.generation == generation;
        Some((l.entries.clone(), same, same && l.at.elapsed() < MAX_AGE))
    }

    fn reload_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.reloading.lock() {
            Ok(mut m) => m.entry(tenant.to_string()).or_default().clone(),
            // A poisoned map only costs the single-flight, not correctness.
            Err(_) => Arc::default(),
        }
    }

    async fn entries(&self, kb: &Kb, tenant: &str) -> Result<Arc<Vec<Entry>>, KbError> {
        let generation = kb.generation();
        let cached = self.cached(tenant, generation);
        if let Some((entries, _, true)) = &cached {
            return Ok(entries.clone());
        }
        let lock = self.reload_lock(tenant);
        let _reloading = match (&cached, lock.try_lock()) {
            (_, Ok(g)) => g,
            // Only aged: someone is reloading it; this call uses the last load meanwhile.
            (Some((entries, true, false)), Err(_)) => return Ok(entries.clone()),
            (_, Err(_)) => {
                let g = lock.lock().await;
                if let Some((entries, _, true)) = self.cached(tenant, generation) {
                    return Ok(entries);
                }
                g
            }
        };
        metrics::counter!("confidant_suggest_reloads_total").increment(1);
        let mut entries = Vec::new();
        let mut after = String::new();
        loop {
            let page = kb
                .list(tenant, None, Some("published"), &after, PAGE)
                .await?;
            for a in &page {
                for q in &a.questions {
                    let norm = normalise(q);
                    entries.push(Entry {
                        article_id: a.id.clone(),
                        title: a.title.clone(),
                        question: q.clone(),
                        words: words_of(&norm),
                        norm,
                        lang: a.lang.clone(),
                        channels: a.channels.clone(),
                        valid_from: a.valid_from,
                        valid_until: a.valid_until,
                    });
                }
            }
            match page.last() {
                Some(a) if page.len() == PAGE => after = a.id.clone(),
                _ => break,
            }
        }
        let entries = Arc::new(entries);
        if let Ok(mut t) = self.tenants.lock() {
            t.insert(
                tenant.to_string(),
                Loaded {
                    generation,
                    at: Instant::now(),
                    entries: entries.clone(),
                },
            );
        }
        Ok(entries)
    }

    /// Up to `limit` questions, one per article, best match first (then shorter, then by
    /// article id: deterministic).
    pub async fn suggest(
        &self,
        kb: &Kb,
        tenant: &str,
        prefix: &str,
        lang: Option<&str>,
        channel: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, KbError> {
        let typed = normalise(prefix);
        // Keep a trailing space: it says the last word is finished.
        let typed = if prefix.ends_with(char::is_whitespace) && !typed.is_empty() {
            format!("{typed} ")
        } else {
            typed
        };
        if typed.trim().is_empty() {
            return Ok(Vec::new());
        }
        let entries = self.entries(kb, tenant).await?;
        let typed = Typed::new(&typed);
        let now = now_ms();
        let mut best: HashMap<&str, (u32, &Entry)> = HashMap::new();
        for e in entries.iter() {
            if lang.is_some_and(|l| l != e.lang)
                || channel
                    .is_some_and(|c| !e.channels.is_empty() && !e.channels.iter().any(|x| x == c))
                || (e.valid_from != VALID_FROM_OPEN && e.valid_from > now)
                || (e.valid_until != VALID_UNTIL_OPEN && e.valid_until < now)
            {
                continue;
            }
            let Some(s) = score(&e.norm, &e.words, &typed) else {
                continue;
            };
            let better = match best.get(e.article_id.as_str()) {
                None => true,
                Some((bs, be)) => s > *bs || (s == *bs && e.question.len() < be.question.len()),
            };
            if better {
                best.insert(&e.article_id, (s, e));
            }
        }
        let mut out: Vec<(u32, &Entry)> = best.into_values().collect();
        out.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.1.question.len().cmp(&b.1.question.len()))
                .then(a.1.article_id.cmp(&b.1.article_id))
        });
        Ok(out
            .into_iter()
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score_of(question: &str, typed: &str) -> Option<u32> {
        score(question, &words_of(question), &Typed::new(typed))
    }

    #[test]
    fn prefix_then_words_then_chinese_substring() {
        assert_eq!(score_of("how do i reset my pin?", "how do i"), Some(3));
        assert_eq!(score_of("how do i reset my pin?", "reset my p"), Some(2));
        assert_eq!(score_of("how do i reset my pin?", "pin res"), Some(2));
        assert_eq!(score_of("how do i reset my pin?", "pinx"), None);
        // A finished word must match whole.
        assert_eq!(score_of("how do i reset my pin?", "pi "), None);
        // Punctuation typed around a word is not part of it.
        assert_eq!(score_of("how do i reset my pin?", "pin? reset"), Some(2));
        assert_eq!(score_of("怎么修改银行卡密码", "银行卡"), Some(2));
        assert_eq!(score_of("怎么修改银行卡密码", "怎么"), Some(3));
        assert_eq!(score_of("怎么修改银行卡密码", "信用卡"), None);
    }
}
