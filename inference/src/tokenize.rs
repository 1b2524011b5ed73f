//! Tokenisation as sentence-transformers does it: truncate at the model's max_seq_length
//! and pad only within a batch. The tokenizer.json shipped with all-MiniLM-L6-v2 pads every
//! input to 128 and truncates at 128; both are switched off here and handled by the batcher.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::{InferenceError, Result};

/// Whether a text is a search query or an indexed passage: models such as multilingual-e5
/// expect a different prefix for each (from the manifest, never from callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputKind {
    #[default]
    Query,
    Passage,
}

/// One tokenised input, ready for the batcher.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub truncated: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

pub(crate) struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| InferenceError::Tokenizer(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }
}
