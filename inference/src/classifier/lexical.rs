//! The lexical view of an utterance: word 1–2-grams and character 2–5-grams inside word
//! boundaries, weighted by TF-IDF, and a linear (multinomial logistic) head over them.
//!
//! A sentence vector blurs exact wording, and a bank's intents often turn on it ("top up"
//! against "top-up reverted", "card" against "virtual card"). The lexical head makes other
//! mistakes than the sentence-vector head, so the sum of their logits beats either alone
//! (benches/README.md, "Intent detection"). Character n-grams also cover Chinese, which
//! has no spaces: a run of Han characters is one "word", and its bigrams are the terms.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::rng::Rng;

const WORD: &str = "w:";
const CHAR: &str = "c:";

/// A sparse, L2-normalised feature vector: sorted term indices and their weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Features {
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

/// Calls `f(block, term)` for every term of `text`, word terms (block 0) first, then
/// character terms (block 1), with repeats (their count is the term frequency). One
/// buffer serves every term: a bot answer reads a few hundred of them.
fn each_term(text: &str, mut f: impl FnMut(usize, &str)) {
    let lower = text.to_lowercase();
    let toks: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().count() >= 2)
        .collect();
    let mut term = String::new();
    for t in &toks {
        term.clear();
        term.push_str(WORD);
        term.push_str(t);
        f(0, &term);
    }
    for w in toks.windows(2) {
        term.clear();
        term.push_str(WORD);
        term.push_str(w[0]);
        term.push(' ');
        term.push_str(w[1]);
        f(0, &term);
    }
    for word in lower.split_whitespace() {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in 2..=5 {
            for w in padded.windows(n) {
                term.clear();
                term.push_str(CHAR);
                term.extend(w);
                f(1, &term);
            }
        }
    }
}

/// Every term of `text`: the word block and the character block, with repeats.
fn terms(text: &str) -> (Vec<String>, Vec<String>) {
    let mut blocks: [Vec<String>; 2] = Default::default();
    each_term(text, |b, t| blocks[b].push(t.to_owned()));
    let [words, chars] = blocks;
    (words, chars)
}

/// The terms seen in at least `min_df` training utterances, and their inverse document
/// frequencies (smoothed, as scikit-learn's `TfidfVectorizer` does).
#[derive(Debug, Clone)]
pub(crate) struct Vocabulary {
    pub terms: Vec<String>,
    pub idf: Vec<f32>,
    lookup: HashMap<String, u32>,
}

impl Vocabulary {
    pub(crate) fn fit(texts: &[&str], min_df: usize) -> Self {
        let mut df: BTreeMap<String, usize> = BTreeMap::new();
        for text in texts {
            let (mut w, mut c) = terms(text);
            w.append(&mut c);
            w.sort_unstable();
            w.dedup();
            for t in w {
                *df.entry(t).or_default() += 1;
            }
        }
        let n = texts.len() as f32;
        let (terms, idf): (Vec<String>, Vec<f32>) = df
            .into_iter()
            .filter(|(_, d)| *d >= min_df.max(1))
            .map(|(t, d)| (t, ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0))
            .unzip();
        Self::new(terms, idf)
    }

    pub(crate) fn new(terms: Vec<String>, idf: Vec<f32>) -> Self {
        let lookup = terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Self { terms, idf, lookup }
    }

    pub(crate) fn len(&self) -> usize {
        self.terms.len()
    }

    /// Sublinear term frequency × IDF, each of the two blocks (words, characters) scaled
    /// to unit length so that neither drowns the other.
    pub(crate) fn features(&self, text: &str) -> Features {
        let mut hits: [Vec<u32>; 2] = Default::default();
        each_term(text, |b, t| {
            if let Some(&i) = self.lookup.get(t) {
                hits[b].push(i);
            }
        });
        let mut out: Vec<(u32, f32)> = Vec::new();
        for mut block in hits {
            block.sort_unstable();
            let weighted: Vec<(u32, f32)> = block
                .chunk_by(|a, b| a == b)
                .map(|run| {
                    let (i, n) = (run[0], run.len());
                    (i, (1.0 + (n as f32).ln()) * self.idf[i as usize])
                })
                .collect();
            let norm = weighted.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                out.extend(weighted.into_iter().map(|(i, v)| (i, v / norm)));
            }
        }
        out.sort_unstable_by_key(|(i, _)| *i);
        Features {
            idx: out.iter().map(|(i, _)| *i).collect(),
            val: out.iter().map(|(_, v)| *v).collect(),
        }
    }
}

/// How the lexical head is trained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LexicalOptions {
    /// Terms seen in fewer training utterances are dropped (this also keeps one-off
    /// strings, such as a name or an account number, out of the artefact).
    pub min_df: usize,
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty per example.
    pub l2: f32,
}

impl Default for LexicalOptions {
    fn default() -> Self {
        Self {
            min_df: 2,
            epochs: 20,
            learning_rate: 0.1,
            l2: 1e-5,
        }
    }
}

/// Weights by term (`terms × classes`, row-major) and one bias per class.
#[derive(Debug, Clone)]
pub(crate) struct LexicalHead {
    pub vocabulary: Vocabulary,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub classes: usize,
}

impl LexicalHead {
    pub(crate) fn logits(&self, f: &Features) -> Vec<f32> {
        let c = self.classes;
        let mut z = self.bias.clone();
        for (&i, &v) in f.idx.iter().zip(&f.val) {
            let row = &self.weights[i as usize * c..(i as usize + 1) * c];
            z.iter_mut().zip(row).for_each(|(z, w)| *z += v * w);
        }
        z
    }

    pub(crate) fn logits_of(&self, text: &str) -> Vec<f32> {
        self.logits(&self.vocabulary.features(text))
    }
}

fn softmax_in_place(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    z.iter_mut().for_each(|v| {
        *v = (*v - max).exp();
        sum += *v;
    });
    z.iter_mut().for_each(|v| *v /= sum);
}

/// Multinomial logistic regression by AdaGrad, one example at a time: the features are
/// sparse (a few hundred of tens of thousands of terms), so each step touches only their
/// rows. Deterministic for a given seed. Returns the head and each epoch's mean loss.
pub(crate) fn train(
    texts: &[&str],
    y: &[u32],
    classes: usize,
    opts: &LexicalOptions,
    seed: u64,
) -> (LexicalHead, Vec<f32>) {
    let vocabulary = Vocabulary::fit(texts, opts.min_df);
    let features: Vec<Features> = texts.iter().map(|t| vocabulary.features(t)).collect();
    let c = classes;
    let mut head = LexicalHead {
        weights: vec![0.0; vocabulary.len() * c],
        bias: vec![0.0; c],
        vocabulary,
        classes: c,
    };
    let mut g2w = vec![0f32; head.weights.len()];
    let mut g2b = vec![0f32; c];
    let eps = 1e-8;
    let mut rng = Rng::new(seed ^ 0x1E71_CA15);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    let mut losses = Vec::with_capacity(opts.epochs);
    for _ in 0..opts.epochs.max(1) {
        rng.shuffle(&mut order);
        let mut loss = 0f32;
        for &n in &order {
            let f = &features[n];
            let mut p = head.logits(f);
            softmax_in_place(&mut p);
            let truth = y[n] as usize;
            loss -= p[truth].max(1e-12).ln();
            p[truth] -= 1.0;
            for (k, g) in p.iter().enumerate() {
                g2b[k] += g * g;
                head.bias[k] -= opts.learning_rate * g / (g2b[k].sqrt() + eps);
            }
            for (&i, &v) in f.idx.iter().zip(&f.val) {
                let base = i as usize * c;
                for (k, g) in p.iter().enumerate() {
                    let j = base + k;
                    let grad = g * v + opts.l2 * head.weights[j];
                    g2w[j] += grad * grad;
                    head.weights[j] -= opts.learning_rate * grad / (g2w[j].sqrt() + eps);
                }
            }
        }
        losses.push(loss / texts.len().max(1) as f32);
    }
    (head, losses)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn terms_are_word_and_character_ngrams() {
        let (w, c) = terms("Top-up failed");
        assert_eq!(w, ["w:top", "w:up", "w:failed", "w:top up", "w:up failed"]);
        assert!(c.contains(&"c: to".to_string()));
        assert!(c.contains(&"c:-up ".to_string()));
        assert!(c.contains(&"c:faile".to_string()));
        // Chinese: one run of Han characters, its character n-grams.
        let (w, c) = terms("信用卡丢了");
        assert_eq!(w, ["w:信用卡丢了"]);
        assert!(c.contains(&"c:信用".to_string()));
        assert!(c.contains(&"c:卡丢了 ".to_string()));
    }

    #[test]
    fn features_are_unit_length_per_block_and_ignore_unknown_terms() {
        let v = Vocabulary::fit(&["card lost", "card stolen", "lost pin"], 2);
        assert!(v.terms.contains(&"w:card".to_string()));
        assert!(
            !v.terms.contains(&"w:stolen".to_string()),
            "seen once: dropped"
        );
        let f = v.features("my card");
        let norm: f32 = f.val.iter().map(|x| x * x).sum();
        // The word block and the character block are each of unit length.
        assert!((norm - 2.0).abs() < 1e-4, "{norm}");
        assert!(v.features("zzzz qqqq").idx.is_empty());
    }

    #[test]
    fn features_weigh_each_known_term_by_its_count() {
        let train = [
            "my card was stolen",
            "card stolen card",
            "信用卡丢了",
            "lost my pin",
        ];
        let v = Vocabulary::fit(&train, 1);
        for text in [
            "card card stolen, my card!",
            "信用卡丢了 card",
            "nothing known here",
        ] {
            // The same figures from the term lists, the slow way.
            let (words, chars) = terms(text);
            let mut want: Vec<(u32, f32)> = Vec::new();
            for block in [words, chars] {
                let mut tf: BTreeMap<u32, u32> = BTreeMap::new();
                for t in block.iter().filter_map(|t| v.lookup.get(t)) {
                    *tf.entry(*t).or_default() += 1;
                }
                let w: Vec<(u32, f32)> = tf
                    .into_iter()
                    .map(|(i, n)| (i, (1.0 + (n as f32).ln()) * v.idf[i as usize]))
                    .collect();
                let norm = w.iter().map(|(_, x)| x * x).sum::<f32>().sqrt();
                want.extend(
                    w.into_iter()
                        .filter(|_| norm > 0.0)
                        .map(|(i, x)| (i, x / norm)),
                );
            }
            want.sort_unstable_by_key(|(i, _)| *i);
            let f = v.features(text);
            assert_eq!(
                f.idx,
                want.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                "{text}"
            );
            assert_eq!(
                f.val,
                want.iter().map(|(_, x)| *x).collect::<Vec<_>>(),
                "{text}"
            );
        }
        assert!(v.features("card card").val.iter().any(|&x| x > 0.0));
    }

    #[test]
    fn learns_wording_and_is_deterministic() {
        let texts = [
            "my card was stolen",
            "someone stole my card",
            "card stolen yesterday",
            "stolen card please block",
            "reset my pin",
            "forgot my pin",
            "pin reset please",
            "new pin needed",
        ];
        let y = [0, 0, 0, 0, 1, 1, 1, 1];
        let opts = LexicalOptions::default();
        let (h, losses) = train(&texts, &y, 2, &opts, 1);
        assert!(losses.last().unwrap() < &(losses[0] * 0.5), "{losses:?}");
        let z = h.logits_of("my card got stolen");
        assert!(z[0] > z[1], "{z:?}");
        let z = h.logits_of("I need to reset the pin");
        assert!(z[1] > z[0], "{z:?}");
        let (again, _) = train(&texts, &y, 2, &opts, 1);
        assert_eq!(h.weights, again.weights);
    }
}
