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
    entries: Arc<Questions>,
}

/// A tenant's questions and, for each word in them, the questions that have it: a
/// keystroke looks at the questions having all its words instead of all of them (a scan
/// of 26k questions took ~10 ms a call in the debug build the benches run).
struct Questions {
    entries: Vec<Entry>,
    /// Sorted by word, so that an unfinished word's completions are one range.
    vocab: Vec<(Box<str>, Vec<u32>)>,
    /// Entry ids sorted by `norm`: the questions starting with a text are one range.
    by_norm: Vec<u32>,
}

impl Questions {
    fn new(entries: Vec<Entry>) -> Self {
        let mut by_word: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for w in &e.words {
                let list = by_word.entry(w).or_default();
                // Each question once per word, however often the word recurs in it.
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
        }
        let mut vocab: Vec<(Box<str>, Vec<u32>)> = by_word
            .into_iter()
            .map(|(w, l)| (Box::from(w), l))
            .collect();
        vocab.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut by_norm: Vec<u32> = (0..entries.len() as u32).collect();
        by_norm.sort_unstable_by(|&a, &b| entries[a as usize].norm.cmp(&entries[b as usize].norm));
        Self {
            entries,
            vocab,
            by_norm,
        }
    }

    /// The questions whose normalised text starts with `text`.
    fn starting_with<'a>(&'a self, text: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = self
            .by_norm
            .partition_point(|&i| self.entries[i as usize].norm.as_str() < text);
        self.by_norm[start..]
            .iter()
            .map(|&i| &self.entries[i as usize])
            .take_while(move |e| e.norm.starts_with(text))
    }

    /// The questions having `word` whole, or (`prefix`) a word starting with it.
    fn having(&self, word: &str, prefix: bool) -> Vec<u32> {
        let start = self.vocab.partition_point(|(w, _)| &**w < word);
        let mut out: Vec<u32> = Vec::new();
        for (w, list) in &self.vocab[start..] {
            let hit = if prefix {
                w.starts_with(word)
            } else {
                &**w == word
            };
            if !hit {
                break;
            }
            out.extend(list);
        }
        if prefix {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// The questions that can match `typed`: every match has all its words, so the
    /// questions having each of them, intersected (rarest first). `None`: look at all
    /// (Chinese substrings, no words).
    fn candidates(&self, typed: &Typed) -> Option<Vec<u32>> {
        if typed.cjk || typed.words.is_empty() {
            return None;
        }
        let n = typed.words.len();
        let mut lists: Vec<Vec<u32>> = typed
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| self.having(w, i + 1 == n && !typed.finished))
            .collect();
        lists.sort_by_key(Vec::len);
        let mut lists = lists.into_iter();
        let mut out = lists.next().unwrap_or_default();
        for next in lists {
            if out.is_empty() {
                break;
            }
            out = intersect(&out, &next);
        }
        Some(out)
    }
}

/// Keeps `e` as its article's suggestion if it scores higher (or as high, shorter).
fn offer<'a>(best: &mut HashMap<&'a str, (u32, &'a Entry)>, e: &'a Entry, s: u32) {
    let better = match best.get(e.article_id.as_str()) {
        None => true,
        Some((bs, be)) => s > *bs || (s == *bs && e.question.len() < be.question.len()),
    };
    if better {
        best.insert(&e.article_id, (s, e));
    }
}

/// Both sorted lists' common ids.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
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
            // Split as the questions are, so that a prefix of a question has its words.
            words: text
                .split(|c: char| !c.is_alphanumeric())
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
    fn cached(&self, tenant: &str, generation: u64) -> Option<(Arc<Questions>, bool, bool)> {
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

    async fn entries(&self, kb: &Kb, tenant: &str) -> Result<Arc<Questions>, KbError> {
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
        let entries = Arc::new(Questions::new(entries));
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
        let questions = self.entries(kb, tenant).await?;
        let typed = Typed::new(&typed);
        let now = now_ms();
        let shown = |e: &Entry| {
            !(lang.is_some_and(|l| l != e.lang)
                || channel
                    .is_some_and(|c| !e.channels.is_empty() && !e.channels.iter().any(|x| x == c))
                || (e.valid_from != VALID_FROM_OPEN && e.valid_from > now)
                || (e.valid_until != VALID_UNTIL_OPEN && e.valid_until < now))
        };
        let mut best: HashMap<&str, (u32, &Entry)> = HashMap::new();
        // Questions starting with the text score highest: when they fill the list (short
        // prefixes, whose words most questions share), nothing else could get in.
        let mut starting = std::collections::HashSet::new();
        for e in questions.starting_with(typed.text).filter(|e| shown(e)) {
            starting.insert(e.article_id.as_str());
            offer(&mut best, e, 3);
        }
        if starting.len() < limit {
            let all = &questions.entries;
            let picked: Box<dyn Iterator<Item = &Entry>> = match questions.candidates(&typed) {
                Some(ids) => Box::new(ids.into_iter().filter_map(|i| all.get(i as usize))),
                None => Box::new(all.iter()),
            };
            for e in picked.filter(|e| shown(e)) {
                if let Some(s) = score(&e.norm, &e.words, &typed) {
                    offer(&mut best, e, s);
                }
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

    fn entry(id: &str, question: &str) -> Entry {
        let norm = normalise(question);
        Entry {
            article_id: id.into(),
            title: String::new(),
            question: question.into(),
            words: words_of(&norm),
            norm,
            lang: "en".into(),
            channels: Vec::new(),
            valid_from: VALID_FROM_OPEN,
            valid_until: VALID_UNTIL_OPEN,
        }
    }

    /// The word index never drops a question the full scan would match.
    #[test]
    fn candidates_hold_every_match() {
        let qs = Questions::new(vec![
            entry("pin", "How do I reset my PIN?"),
            entry("card", "My card was stolen, what do I do?"),
            entry("mail", "Can I get statements by e-mail?"),
            entry("abroad", "Can I use my card abroad? My card, abroad."),
        ]);
        for typed in [
            "how do i",
            "reset my p",
            "pin res",
            "my card ",
            "my ca",
            "e-ma",
            "can i use my",
            "card",
            "x",
            "do i ",
            "abroad? my",
        ] {
            let t = Typed::new(typed);
            let scanned: Vec<usize> = (0..qs.entries.len())
                .filter(|&i| score(&qs.entries[i].norm, &qs.entries[i].words, &t).is_some())
                .collect();
            let picked = qs.candidates(&t).unwrap();
            for i in &scanned {
                assert!(picked.contains(&(*i as u32)), "{typed:?}: {i} missing");
            }
            assert!(picked.len() <= qs.entries.len());
        }
        assert_eq!(qs.candidates(&Typed::new("my card ")).unwrap(), [1, 3]);
        // Only the questions having every word are scored.
        assert_eq!(qs.candidates(&Typed::new("can i use my")).unwrap(), [3]);
        assert!(
            qs.candidates(&Typed::new("银行")).is_none(),
            "Chinese scans"
        );
        // "can i get statements…" sorts before "can i use my card…".
        let starting: Vec<&str> = qs
            .starting_with("can i ")
            .map(|e| e.article_id.as_str())
            .collect();
        assert_eq!(starting, ["mail", "abroad"]);
        assert_eq!(qs.starting_with("how do i").count(), 1);
        assert_eq!(qs.starting_with("do i").count(), 0);
    }
}
