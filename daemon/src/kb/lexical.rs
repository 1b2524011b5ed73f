//! The lexical signal: BM25 sparse vectors from Qdrant's own tokenizer pipeline, with the
//! multilingual tokenizer (charabia: Chinese word segmentation, Latin scripts by word) so
//! product names, codes and Chinese terms match exactly. The index applies IDF at query
//! time, so document vectors stay valid as the collection grows.
//!
//! The multilingual tokenizer drops tokens without a letter, which would lose phone
//! numbers, error codes and amounts ("0800 123 456", "error 504"): digits are spelled
//! as letters first, the same way for documents and queries, so numbers match exactly.

use qdrant_edge::TokenizerType;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::ordered_float::NotNan;

use std::borrow::Cow;

use crate::index::SparseVector;

/// `504` becomes `qfqaqe`: a letter pair per digit, distinct per number, unchanged by
/// lower-casing; words around it are untouched.
fn spell_digits(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if let Some(d) = c.to_digit(10).filter(|_| c.is_ascii_digit()) {
            out.push('q');
            out.push((b'a' + d as u8) as char);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

pub struct Lexical {
    bm25: EdgeBm25,
}

/// Our chunks are questions and short passages, far below BM25's default 256 tokens; the
/// average sets how much a long chunk is discounted.
const AVERAGE_CHUNK_TOKENS: f64 = 48.0;

impl Lexical {
    pub fn new() -> Result<Self, String> {
        let config = EdgeBm25Config {
            tokenizer: TokenizerType::Multilingual,
            language: Some("english".into()),
            avg_len: NotNan::new(AVERAGE_CHUNK_TOKENS).map_err(|e| e.to_string())?,
            ..Default::default()
        };
        Ok(Self {
            bm25: EdgeBm25::new(config).map_err(|e| e.to_string())?,
        })
    }

    pub fn document(&self, text: &str) -> SparseVector {
        let v = self.bm25.embed_document(&spell_digits(text));
        SparseVector {
            indices: v.indices,
            values: v.values,
        }
    }

    pub fn query(&self, text: &str) -> SparseVector {
        let v = self.bm25.embed_query(&spell_digits(text));
        SparseVector {
            indices: v.indices,
            values: v.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(a: &SparseVector, b: &SparseVector) -> usize {
        a.indices.iter().filter(|i| b.indices.contains(i)).count()
    }

    #[test]
    fn english_stems_and_drops_stop_words() {
        let l = Lexical::new().unwrap();
        let d = l.document("Blocking a stolen credit card");
        let q = l.query("how do I block my card");
        assert_eq!(shared(&d, &q), 2, "block/blocking and card");
    }

    #[test]
    fn numbers_match_exactly() {
        let l = Lexical::new().unwrap();
        let d = l.document("Call 0800 123 456 or see error 504");
        assert_eq!(shared(&d, &l.query("0800")), 1);
        assert_eq!(shared(&d, &l.query("error 504")), 2);
        assert_eq!(shared(&d, &l.query("5040")), 0);
        let zh = l.document("请拨打 95588 客服热线");
        assert_eq!(shared(&zh, &l.query("95588")), 1);
    }

    #[test]
    fn chinese_is_segmented_into_words() {
        let l = Lexical::new().unwrap();
        let d = l.document("信用卡丢失后请立即致电客服");
        let q = l.query("我的信用卡丢失了");
        assert!(shared(&d, &q) >= 1, "{d:?} {q:?}");
        // Words, not single characters: the document has fewer terms than characters.
        assert!(d.indices.len() < 13);
    }
}
