//! Type-ahead: the published articles' question variants, held in memory per tenant and
//! matched against what the customer has typed so far. No model call: it has to keep up
//! with keystrokes. The cache reloads when the knowledge base changes (its generation) and
//! at least every `MAX_AGE`, so that writes made through another daemon show up too.
//!
//! One load at a time per tenant: with ~26k questions a load reads every article, and
//! when every caller did it at once (a keystroke storm as the cache aged) the database
//! pool ran dry and memory grew to 12 GB. After a local write callers wait for the one
//! load (what was just written must show); when the cache has only aged, a background
//! task refreshes it and every keystroke meanwhile uses the last load, so none waits the
//! ~0.2-0.5 s a load of 26k questions takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::index::{VALID_FROM_OPEN, VALID_UNTIL_OPEN};
use crate::kb::{Kb, KbError};
use crate::store::{Store, now_ms};

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

/// A tenant's questions, in the order suggestions are shown (shorter first, then by
/// article id), with two indexes over them, so that a keystroke reads only as many
/// questions as it returns: questions starting with the text are one range of `by_norm`
/// read smallest id first, and the questions having each typed word are posting lists in
/// id order. A scan of 26k questions took ~10 ms a call in the debug build the benches
/// run, and scoring every question sharing a common prefix ("what is (are)") ~20 ms.
struct Questions {
    entries: Vec<Entry>,
    /// Sorted by word, so that an unfinished word's completions are one range.
    vocab: Vec<(Box<str>, Vec<u32>)>,
    /// Entry ids sorted by `norm`: the questions starting with a text are one range.
    by_norm: Vec<u32>,
    /// Each id's position in `by_norm`.
    pos: Vec<u32>,
    /// `mins[k][i]`: the smallest id in `by_norm[i .. i + 2^k]` (a sparse table).
    mins: Vec<Vec<u32>>,
}

/// The order suggestions are shown in; `norm` last only to make it total.
fn shown_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    a.question
        .len()
        .cmp(&b.question.len())
        .then_with(|| a.article_id.cmp(&b.article_id))
        .then_with(|| a.norm.cmp(&b.norm))
}

/// A posting list: a word's own, or the union of an unfinished word's completions.
type Postings<'a> = std::borrow::Cow<'a, [u32]>;

impl Questions {
    fn new(mut entries: Vec<Entry>) -> Self {
        entries.sort_by(shown_order);
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
        by_norm.sort_by(|&a, &b| entries[a as usize].norm.cmp(&entries[b as usize].norm));
        let mut pos = vec![0u32; entries.len()];
        for (p, &i) in by_norm.iter().enumerate() {
            pos[i as usize] = p as u32;
        }
        let mut mins = vec![by_norm.clone()];
        let mut width = 1;
        while width * 2 <= by_norm.len() {
            let Some(prev) = mins.last() else { break };
            let next: Vec<u32> = (0..=by_norm.len() - width * 2)
                .map(|i| prev[i].min(prev[i + width]))
                .collect();
            mins.push(next);
            width *= 2;
        }
        Self {
            entries,
            vocab,
            by_norm,
            pos,
            mins,
        }
    }

    /// The smallest id in `by_norm[l..r]`, `l < r`.
    fn smallest(&self, l: usize, r: usize) -> u32 {
        let k = (r - l).ilog2() as usize;
        self.mins[k][l].min(self.mins[k][r - (1 << k)])
    }

    /// The ids of the questions whose normalised text starts with `text`, smallest first.
    fn starting_with<'a>(&'a self, text: &str) -> impl Iterator<Item = u32> + 'a {
        let norm = |i: u32| self.entries[i as usize].norm.as_str();
        let l = self.by_norm.partition_point(|&i| norm(i) < text);
        let r = l + self.by_norm[l..].partition_point(|&i| norm(i).starts_with(text));
        // Ranges of `by_norm` by their smallest id: popping one splits it around it.
        let mut heap = std::collections::BinaryHeap::new();
        if l < r {
            heap.push(std::cmp::Reverse((self.smallest(l, r), l, r)));
        }
        std::iter::from_fn(move || {
            let std::cmp::Reverse((id, l, r)) = heap.pop()?;
            let p = self.pos[id as usize] as usize;
            for (a, b) in [(l, p), (p + 1, r)] {
                if a < b {
                    heap.push(std::cmp::Reverse((self.smallest(a, b), a, b)));
                }
            }
            Some(id)
        })
    }

    /// The vocabulary entries equal to `word`, or (`prefix`) starting with it.
    fn words(&self, word: &str, prefix: bool) -> &[(Box<str>, Vec<u32>)] {
        let start = self.vocab.partition_point(|(w, _)| &**w < word);
        let len = self.vocab[start..].partition_point(|(w, _)| {
            if prefix {
                w.starts_with(word)
            } else {
                &**w == word
            }
        });
        &self.vocab[start..start + len]
    }

    /// The ids, smallest first, of the questions that can match `typed`: every match has
    /// all its words, so the rarest word's postings are read and the others' looked up.
    /// An unfinished word's completions are merged only when that is cheaper than letting
    /// `score` check them; with no list at all every question is read (Chinese: no words).
    fn candidates<'a>(&'a self, typed: &Typed) -> Box<dyn Iterator<Item = u32> + 'a> {
        let everyone =
            || -> Box<dyn Iterator<Item = u32> + 'a> { Box::new(0..self.entries.len() as u32) };
        if typed.cjk || typed.words.is_empty() {
            return everyone();
        }
        let n = typed.words.len();
        let mut lists: Vec<Postings<'a>> = Vec::new();
        let mut unfinished: Option<&[(Box<str>, Vec<u32>)]> = None;
        for (i, w) in typed.words.iter().enumerate() {
            if i + 1 == n && !typed.finished {
                unfinished = Some(self.words(w, true));
            } else {
                let list = self.words(w, false).first().map_or(&[][..], |(_, l)| l);
                lists.push(Postings::Borrowed(list));
            }
        }
        if let Some(range) = unfinished {
            let total: usize = range.iter().map(|(_, l)| l.len()).sum();
            let rarest = lists.iter().map(|l| l.len()).min();
            if total <= rarest.unwrap_or(self.entries.len() / 8) {
                let mut union: Vec<u32> =
                    range.iter().flat_map(|(_, l)| l.iter().copied()).collect();
                union.sort_unstable();
                union.dedup();
                lists.push(Postings::Owned(union));
            }
        }
        if lists.is_empty() {
            return everyone();
        }
        lists.sort_by_key(|l| l.len());
        let mut lists = lists.into_iter();
        let Some(driver) = lists.next() else {
            return everyone();
        };
        let others: Vec<Postings<'a>> = lists.collect();
        let ids: Vec<u32> = driver.into_owned();
        Box::new(
            ids.into_iter()
                .filter(move |id| others.iter().all(|l| l.binary_search(id).is_ok())),
        )
    }

    /// Up to `limit` questions that `shown` lets through, one per article, best match
    /// first. Ids are in the order suggestions are shown, so each read stops as soon as
    /// the list is full: the questions starting with the text first (nothing can beat
    /// them), then those having every typed word.
    fn pick(&self, typed: &Typed, shown: impl Fn(&Entry) -> bool, limit: usize) -> Vec<&Entry> {
        if limit == 0 {
            return Vec::new();
        }
        // The first of an article's questions read is its best: reads go in id order,
        // and every question starting with the text is read before any other.
        let mut best: HashMap<&str, (u32, &Entry)> = HashMap::new();
        for e in self
            .starting_with(typed.text)
            .map(|i| &self.entries[i as usize])
        {
            if shown(e) {
                best.entry(e.article_id.as_str()).or_insert((3, e));
                if best.len() >= limit {
                    break;
                }
            }
        }
        if best.len() < limit {
            for e in self.candidates(typed).map(|i| &self.entries[i as usize]) {
                if best.contains_key(e.article_id.as_str()) || !shown(e) {
                    continue;
                }
                if let Some(s) = score(&e.norm, &e.words, typed) {
                    best.insert(&e.article_id, (s, e));
                    if best.len() >= limit {
                        break;
                    }
                }
            }
        }
        let mut out: Vec<(u32, &Entry)> = best.into_values().collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| shown_order(a.1, b.1)));
        out.into_iter().map(|(_, e)| e).collect()
    }
}

#[derive(Default)]
pub struct Suggester {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    tenants: Mutex<HashMap<String, Loaded>>,
    /// Held by whoever loads a tenant; per tenant.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What a call does with the cache it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Current: use it.
    Use,
    /// Of this generation but older than `MAX_AGE`: use it, and refresh it in the
    /// background unless a load is already running.
    UseAndRefresh,
    /// None yet, or the knowledge base changed since: wait for a load.
    Load,
}

impl Plan {
    fn of(cached: Option<(bool, bool)>) -> Plan {
        match cached {
            Some((_, true)) => Plan::Use,
            Some((true, false)) => Plan::UseAndRefresh,
            _ => Plan::Load,
        }
    }
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

impl Shared {
    /// The cached entries, whether they are of this generation, and whether they are
    /// also younger than `MAX_AGE`; `None` before the first load.
    fn cached(&self, tenant: &str, generation: u64) -> Option<(Arc<Questions>, bool, bool)> {
        let t = self.tenants.lock().ok()?;
        let l = t.get(tenant)?;
        let same = l.generation == generation;
        Some((l.entries.clone(), same, same && l.at.elapsed() < MAX_AGE))
    }

    fn load_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.loading.lock() {
            Ok(mut m) => m.entry(tenant.to_string()).or_default().clone(),
            // A poisoned map only costs the single-flight, not correctness.
            Err(_) => Arc::default(),
        }
    }

    /// Reads the tenant's published questions and caches them as of `generation`.
    async fn load(
        &self,
        store: &Store,
        tenant: &str,
        generation: u64,
    ) -> Result<Arc<Questions>, KbError> {
        metrics::counter!("confidant_suggest_reloads_total").increment(1);
        let mut entries = Vec::new();
        let mut after = String::new();
        loop {
            let page = store
                .kb_list(tenant, None, Some("published"), &after, PAGE as i64)
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
}

impl Suggester {
    async fn entries(&self, kb: &Kb, tenant: &str) -> Result<Arc<Questions>, KbError> {
        let generation = kb.generation();
        let cached = self.shared.cached(tenant, generation);
        let plan = Plan::of(cached.as_ref().map(|(_, same, fresh)| (*same, *fresh)));
        if let Some((entries, _, _)) = cached
            && plan != Plan::Load
        {
            if plan == Plan::UseAndRefresh
                && let Ok(guard) = self.shared.load_lock(tenant).try_lock_owned()
            {
                let shared = self.shared.clone();
                let store = kb.store().clone();
                let tenant = tenant.to_string();
                tokio::spawn(async move {
                    let _loading = guard;
                    if let Err(e) = shared.load(&store, &tenant, generation).await {
                        tracing::warn!(error = %e, "type-ahead refresh failed; the last load stays in use");
                    }
                });
            }
            return Ok(entries);
        }
        let lock = self.shared.load_lock(tenant);
        let _loading = lock.lock().await;
        // Someone else may have loaded it while this call waited.
        if let Some((entries, _, true)) = self.shared.cached(tenant, generation) {
            return Ok(entries);
        }
        self.shared.load(kb.store(), tenant, generation).await
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
        Ok(questions
            .pick(&typed, shown, limit)
            .into_iter()
            .cloned()
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
    fn an_aged_cache_is_used_while_it_is_refreshed_and_a_changed_one_is_waited_for() {
        // (same generation, younger than MAX_AGE)
        assert_eq!(Plan::of(Some((true, true))), Plan::Use);
        assert_eq!(Plan::of(Some((true, false))), Plan::UseAndRefresh);
        assert_eq!(Plan::of(Some((false, false))), Plan::Load);
        assert_eq!(Plan::of(None), Plan::Load);
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

    fn four() -> Questions {
        Questions::new(vec![
            entry("pin", "How do I reset my PIN?"),
            entry("card", "My card was stolen, what do I do?"),
            entry("mail", "Can I get statements by e-mail?"),
            entry("abroad", "Can I use my card abroad? My card, abroad."),
        ])
    }

    fn articles(qs: &Questions, ids: impl Iterator<Item = u32>) -> Vec<&str> {
        ids.map(|i| qs.entries[i as usize].article_id.as_str())
            .collect()
    }

    #[test]
    fn candidates_are_the_questions_having_every_word_in_order() {
        let qs = four();
        let ids: Vec<u32> = qs.candidates(&Typed::new("my card ")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let mut got = articles(&qs, ids.into_iter());
        got.sort();
        assert_eq!(got, ["abroad", "card"]);
        assert_eq!(
            articles(&qs, qs.candidates(&Typed::new("can i use my"))),
            ["abroad"]
        );
        // Chinese has no words: every question is read.
        assert_eq!(qs.candidates(&Typed::new("银行")).count(), 4);
        // "can i get statements…" is shorter than "can i use my card…".
        assert_eq!(
            articles(&qs, qs.starting_with("can i ")),
            ["mail", "abroad"]
        );
        assert_eq!(qs.starting_with("how do i").count(), 1);
        assert_eq!(qs.starting_with("do i").count(), 0);
    }

    /// What `pick` must return: every question scored, each article's best kept.
    fn every_question<'a>(
        qs: &'a Questions,
        typed: &Typed,
        shown: impl Fn(&Entry) -> bool,
        limit: usize,
    ) -> Vec<&'a Entry> {
        let mut best: HashMap<&str, (u32, &Entry)> = HashMap::new();
        for e in qs.entries.iter().filter(|e| shown(e)) {
            let Some(s) = score(&e.norm, &e.words, typed) else {
                continue;
            };
            let better = best.get(e.article_id.as_str()).is_none_or(|(bs, be)| {
                s > *bs || (s == *bs && shown_order(e, be) == std::cmp::Ordering::Less)
            });
            if better {
                best.insert(&e.article_id, (s, e));
            }
        }
        let mut out: Vec<(u32, &Entry)> = best.into_values().collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| shown_order(a.1, b.1)));
        out.into_iter().take(limit).map(|(_, e)| e).collect()
    }

    /// The indexes and the early stops never change the answer: on a few hundred
    /// questions sharing prefixes and words, in two languages, `pick` returns what
    /// scoring every question returns, for prefixes of every length, words in any order
    /// and several list sizes.
    #[test]
    fn pick_returns_what_scoring_every_question_returns() {
        const EN: [&str; 16] = [
            "what", "is", "are", "how", "do", "i", "my", "card", "cards", "pin", "reset", "stolen",
            "e-mail", "fee", "transfer", "abroad",
        ];
        const ZH: [&str; 5] = ["银行卡", "密码", "怎么", "修改", "信用卡"];
        let mut seed: u64 = 7;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut entries = Vec::new();
        for a in 0..120 {
            let zh = a % 5 == 0;
            for _ in 0..1 + next(4) {
                let n = 2 + next(6);
                let q: Vec<&str> = (0..n)
                    .map(|_| {
                        if zh {
                            ZH[next(ZH.len())]
                        } else {
                            EN[next(EN.len())]
                        }
                    })
                    .collect();
                let mut e = entry(&format!("a{a:03}"), &q.join(if zh { "" } else { " " }));
                e.lang = if zh { "zh" } else { "en" }.into();
                entries.push(e);
            }
        }
        let questions: Vec<String> = entries.iter().map(|e| e.norm.clone()).collect();
        let qs = Questions::new(entries);
        let mut typed: Vec<String> = Vec::new();
        for q in questions.iter().step_by(3) {
            let chars: Vec<char> = q.chars().collect();
            typed.extend(
                (1..=chars.len())
                    .step_by(2)
                    .map(|n| chars[..n].iter().collect()),
            );
            typed.push(format!("{q} "));
        }
        typed.extend(
            [
                "card my",
                "fee ",
                "pi",
                "i ",
                "abroad what",
                "cards",
                "x",
                "密码",
                "怎么修",
            ]
            .map(String::from),
        );
        let mut compared = 0;
        for t in &typed {
            let t = Typed::new(t);
            for limit in [1, 3, 5, 10] {
                for only_en in [false, true] {
                    let shown = |e: &Entry| !only_en || e.lang == "en";
                    let want = every_question(&qs, &t, shown, limit);
                    assert_eq!(
                        qs.pick(&t, shown, limit),
                        want,
                        "{:?} limit {limit}",
                        t.text
                    );
                    compared += usize::from(!want.is_empty());
                }
            }
        }
        assert!(compared > 1000, "only {compared} non-empty comparisons");
    }
}
