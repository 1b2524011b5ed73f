//! Type-ahead: the published articles' question variants, held in memory per tenant and
//! matched against what the customer has typed so far. No model call: it has to keep up
//! with keystrokes. The cache reloads when the knowledge base changes (its generation) and
//! at least every `MAX_AGE`, so that writes made through another daemon show up too.

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
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// How well `question` (normalised) matches what was typed; `None`: not at all.
/// Higher is better: the question starts with the text, then every typed word starts a
/// word of the question (the last one may be unfinished), then a substring (Chinese).
fn score(question: &str, typed: &str) -> Option<u32> {
    if question.starts_with(typed) {
        return Some(3);
    }
    let words: Vec<&str> = typed.split(' ').filter(|w| !w.is_empty()).collect();
    let finished = typed.ends_with(' ');
    let q_words: Vec<&str> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let all_words = !words.is_empty()
        && words.iter().enumerate().all(|(i, w)| {
            let w = w.trim_matches(|c: char| !c.is_alphanumeric());
            if w.is_empty() {
                return true;
            }
            let last = i + 1 == words.len() && !finished;
            q_words
                .iter()
                .any(|q| if last { q.starts_with(w) } else { *q == w })
        });
    if all_words {
        return Some(2);
    }
    if typed.chars().any(is_cjk) && question.contains(typed) {
        return Some(2);
    }
    None
}

impl Suggester {
    async fn entries(&self, kb: &Kb, tenant: &str) -> Result<Arc<Vec<Entry>>, KbError> {
        let generation = kb.generation();
        if let Ok(t) = self.tenants.lock()
            && let Some(l) = t.get(tenant)
            && l.generation == generation
            && l.at.elapsed() < MAX_AGE
        {
            return Ok(l.entries.clone());
        }
        let mut entries = Vec::new();
        let mut after = String::new();
        loop {
            let page = kb
                .list(tenant, None, Some("published"), &after, PAGE)
                .await?;
            for a in &page {
                for q in &a.questions {
                    entries.push(Entry {
                        article_id: a.id.clone(),
                        title: a.title.clone(),
                        question: q.clone(),
                        norm: normalise(q),
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
            let Some(s) = score(&e.norm, &typed) else {
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

    #[test]
    fn prefix_then_words_then_chinese_substring() {
        assert_eq!(score("how do i reset my pin?", "how do i"), Some(3));
        assert_eq!(score("how do i reset my pin?", "reset my p"), Some(2));
        assert_eq!(score("how do i reset my pin?", "pin res"), Some(2));
        assert_eq!(score("how do i reset my pin?", "pinx"), None);
        // A finished word must match whole.
        assert_eq!(score("how do i reset my pin?", "pi "), None);
        assert_eq!(score("怎么修改银行卡密码", "银行卡"), Some(2));
        assert_eq!(score("怎么修改银行卡密码", "怎么"), Some(3));
        assert_eq!(score("怎么修改银行卡密码", "信用卡"), None);
    }
}
