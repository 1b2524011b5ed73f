//! Chunking: each question variant is a chunk of its own (so a paraphrase of any variant
//! finds the article), and the answer and body are cut into passages at sentence ends,
//! each short enough for the encoder's window.

use crate::index::ChunkKind;
use crate::store::ArticleRow;

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub kind: ChunkKind,
    pub text: String,
}

/// A rough token count that needs no tokenizer: about four ASCII characters a token, and
/// a token for every other character (CJK characters are single tokens in the models we
/// ship). It only has to keep passages inside the encoder's window. Kept as two counts so
/// that a growing passage is counted as it grows, not re-read (the search path cuts
/// articles again to find the matched passage).
#[derive(Debug, Default, Clone, Copy)]
struct Tokens {
    ascii: usize,
    other: usize,
}

impl Tokens {
    fn of(s: &str) -> Self {
        let mut t = Self::default();
        s.chars().for_each(|c| t.add(c));
        t
    }

    fn add(&mut self, c: char) {
        if c.is_ascii() {
            self.ascii += 1;
        } else {
            self.other += 1;
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            ascii: self.ascii + o.ascii,
            other: self.other + o.other,
        }
    }

    fn estimate(self) -> usize {
        self.ascii.div_ceil(4) + self.other
    }
}

fn estimated_tokens(s: &str) -> usize {
    Tokens::of(s).estimate()
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？' | '；')
}

fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_break = match chars.peek() {
            None => true,
            Some((_, n)) => n.is_whitespace() || !c.is_ascii(),
        };
        if is_sentence_end(c) && next_is_break {
            let end = i + c.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push(&text[start..end]);
            }
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// Cuts one over-long sentence at character boundaries.
fn hard_split(s: &str, budget: usize, out: &mut Vec<String>) {
    let mut cur = String::new();
    let mut tokens = Tokens::default();
    for c in s.chars() {
        cur.push(c);
        tokens.add(c);
        if tokens.estimate() >= budget {
            out.push(std::mem::take(&mut cur));
            tokens = Tokens::default();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
}

pub fn passages(text: &str, budget: usize) -> Vec<String> {
    let budget = budget.max(8);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_tokens = Tokens::default();
    for s in sentences(text) {
        let tokens = Tokens::of(s);
        if cur_tokens.estimate() + tokens.estimate() > budget && !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
            cur.clear();
            cur_tokens = Tokens::default();
        }
        if tokens.estimate() > budget {
            let mut pieces = Vec::new();
            hard_split(s.trim(), budget, &mut pieces);
            out.extend(pieces.into_iter().map(|p| p.trim().to_string()));
        } else {
            cur.push_str(s);
            cur_tokens = cur_tokens.plus(tokens);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The texts indexed as questions, in chunk order: the variants, then the title unless it
/// repeats one.
fn heads(a: &ArticleRow) -> impl Iterator<Item = &String> {
    let title = (!a.title.is_empty()
        && !a.questions.iter().any(|q| q.eq_ignore_ascii_case(&a.title)))
    .then_some(&a.title);
    a.questions.iter().chain(title)
}

/// The answer's and then the body's passages, each as cut for the index.
fn article_passages(a: &ArticleRow, budget: usize) -> impl Iterator<Item = Vec<String>> {
    let budget = budget.saturating_sub(estimated_tokens(&a.title));
    [&a.answer, &a.body]
        .into_iter()
        .map(move |text| passages(text, budget))
}

fn question(text: &str) -> Chunk {
    Chunk {
        kind: ChunkKind::Question,
        text: text.to_string(),
    }
}

/// Passages carry the title: a passage alone often lacks its subject.
fn passage(a: &ArticleRow, p: String) -> Chunk {
    Chunk {
        kind: ChunkKind::Passage,
        text: if a.title.is_empty() {
            p
        } else {
            format!("{}\n{p}", a.title)
        },
    }
}

/// An article's chunks in a stable order (chunk numbers are positions in this list).
pub fn chunks(a: &ArticleRow, budget: usize) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = heads(a).map(|q| question(q)).collect();
    for ps in article_passages(a, budget) {
        out.extend(ps.into_iter().map(|p| passage(a, p)));
    }
    out
}

/// Chunk `n` of `chunks(a, budget)`, cutting no more of the article than it needs.
pub fn chunk_at(a: &ArticleRow, budget: usize, n: usize) -> Option<Chunk> {
    let mut n = n;
    for q in heads(a) {
        if n == 0 {
            return Some(question(q));
        }
        n -= 1;
    }
    for mut ps in article_passages(a, budget) {
        if n < ps.len() {
            return Some(passage(a, ps.swap_remove(n)));
        }
        n -= ps.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_respect_the_budget_and_keep_every_word() {
        let text = "First sentence here. Second one follows! Third? ".repeat(20);
        let ps = passages(&text, 30);
        assert!(ps.len() > 1);
        assert!(ps.iter().all(|p| estimated_tokens(p) <= 30), "{ps:?}");
        let joined: String = ps.join(" ");
        assert_eq!(
            joined.split_whitespace().count(),
            text.split_whitespace().count()
        );
    }

    #[test]
    fn chinese_is_cut_at_chinese_sentence_ends() {
        let text =
            "信用卡丢失后请立即致电客服。我们会冻结您的卡片！新卡将在五个工作日内寄出。".repeat(4);
        let ps = passages(&text, 40);
        assert!(ps.len() > 1);
        assert!(
            ps.iter().all(|p| p.ends_with('。') || p.ends_with('！')),
            "{ps:?}"
        );
    }

    #[test]
    fn one_huge_sentence_is_split_anyway() {
        let ps = passages(&"x".repeat(1000), 50);
        assert!(ps.len() >= 5);
        assert!(ps.iter().all(|p| estimated_tokens(p) <= 50));
    }

    #[test]
    fn questions_title_and_passages() {
        let a = ArticleRow {
            title: "Lost card".into(),
            questions: vec!["I lost my card".into(), "lost card".into()],
            answer: "Call us.".into(),
            body: "More detail.".into(),
            ..Default::default()
        };
        let c = chunks(&a, 200);
        let kinds: Vec<_> = c.iter().map(|c| c.kind).collect();
        // The title equals a question (case aside): not repeated.
        assert_eq!(
            kinds,
            [
                ChunkKind::Question,
                ChunkKind::Question,
                ChunkKind::Passage,
                ChunkKind::Passage
            ]
        );
        assert_eq!(c[2].text, "Lost card\nCall us.");
    }

    #[test]
    fn chunk_at_is_the_chunk_at_that_position() {
        let long = "One sentence of the answer here. ".repeat(30);
        for a in [
            ArticleRow {
                title: "Lost card".into(),
                questions: vec!["I lost my card".into(), "lost card".into()],
                answer: long.clone(),
                body: "More detail. ".repeat(40),
                ..Default::default()
            },
            ArticleRow {
                title: "Another title".into(),
                questions: vec!["q?".into()],
                answer: "Short.".into(),
                body: String::new(),
                ..Default::default()
            },
            ArticleRow {
                answer: "信用卡丢失后请立即致电客服。".repeat(30),
                ..Default::default()
            },
        ] {
            let all = chunks(&a, 40);
            assert!(all.len() > 2 || a.body.is_empty());
            for (i, c) in all.iter().enumerate() {
                assert_eq!(chunk_at(&a, 40, i).as_ref(), Some(c), "chunk {i}");
            }
            assert_eq!(chunk_at(&a, 40, all.len()), None);
        }
    }
}
