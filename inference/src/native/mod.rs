//! A CPU encoder written for batches of short texts, beside Candle's general one.
//!
//! Candle runs BERT as a chain of tensor ops over a padded batch: every op allocates, GELU
//! is libm's scalar `erff`, and linear layers are f32 `gemm`. Here the batch is packed
//! (no padding rows: each text's tokens only), every linear layer is one call whose
//! epilogue (bias, GELU, residual + layer norm) runs on the same thread and rows, and on
//! CPUs with AMX the linear layers run on bf16 tiles with f32 accumulation (`dtype = "bf16"`:
//! cosine ≥ 0.999 with f32, measured in `inference/tests/parity.rs`). The f32 path keeps
//! Candle's numbers (cosine ≥ 0.9999 with sentence-transformers).

#[cfg(target_arch = "x86_64")]
mod amx;
mod math;

use candle_core::DType;
use candle_nn::VarBuilder;

use crate::tokenize::Encoded;
use crate::{InferenceError, Result};

/// What the encoder needs of a BERT or XLM-RoBERTa config.
pub(crate) struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub eps: f32,
    /// Position of a text's first token: 0 for BERT, padding index + 1 for XLM-R.
    pub position_offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precision {
    F32,
    /// bf16 inputs and weights on AMX tiles, f32 accumulation and everything else f32.
    AmxBf16,
}

impl Precision {
    /// AMX bf16 when asked for and this CPU and kernel allow it.
    pub(crate) fn for_dtype(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(Self::F32),
            DType::BF16 if amx_available() => Some(Self::AmxBf16),
            _ => None,
        }
    }
}

/// True when this CPU has AMX-BF16 tiles the process may use.
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
    #[cfg(target_arch = "x86_64")]
    packed: Option<amx::PackedBf16>,
}

struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    ln1: Norm,
    inter: Linear,
    output: Linear,
    ln2: Norm,
}

pub(crate) struct NativeEncoder {
    shape: Shape,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
    precision: Precision,
}

fn flat(vb: &VarBuilder, dims: &[usize], name: &str) -> Result<Vec<f32>> {
    let t = vb.get(dims, name)?.to_dtype(DType::F32)?;
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn norm(vb: &VarBuilder, n: usize) -> Result<Norm> {
    // Old BERT checkpoints name these gamma/beta, as Candle's layer_norm also accepts.
    let (g, b) = if vb.contains_tensor("weight") {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    };
    Ok(Norm {
        g: flat(vb, &[n], g)?,
        b: flat(vb, &[n], b)?,
    })
}

impl Linear {
    fn new(w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize, precision: Precision) -> Self {
        #[cfg(target_arch = "x86_64")]
        let packed = match precision {
            Precision::AmxBf16 => amx::PackedBf16::pack(&w, out, inp),
            Precision::F32 => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = precision;
        Self {
            w,
            b,
            out,
            inp,
            #[cfg(target_arch = "x86_64")]
            packed,
        }
    }

    fn load(vb: &VarBuilder, out: usize, inp: usize, precision: Precision) -> Result<Self> {
        Ok(Self::new(
            flat(vb, &[out, inp], "weight")?,
            flat(vb, &[out], "bias")?,
            out,
            inp,
            precision,
        ))
    }

    /// `y[rows, out] = x[rows, in] · wᵀ + b` for one thread's rows.
    fn apply(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = &self.packed {
            let padded = rows.div_ceil(2 * amx::TILE) * 2 * amx::TILE;
            let mut a = vec![0u16; padded * self.inp];
            for (d, s) in a.iter_mut().zip(&x[..rows * self.inp]) {
                *d = amx::bf16(*s);
            }
            if padded == rows {
                p.matmul(&a, rows, y);
            } else {
                let mut c = vec![0f32; padded * self.out];
                p.matmul(&a, padded, &mut c);
                y[..rows * self.out].copy_from_slice(&c[..rows * self.out]);
            }
            self.add_bias(y, rows);
            return;
        }
        let (m, n, k) = (rows, self.out, self.inp);
        // SAFETY: the pointers cover exactly m×k, n×k and m×n f32 values of live slices
        // (lengths follow from how the encoder sizes its buffers; asserted here), and gemm
        // reads and writes nothing outside the strides it is given.
        assert!(x.len() >= m * k && y.len() >= m * n && self.w.len() == n * k);
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                self.w.as_ptr(),
                k as isize,
                1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        self.add_bias(y, rows);
    }

    fn add_bias(&self, y: &mut [f32], rows: usize) {
        for row in y[..rows * self.out].chunks_exact_mut(self.out) {
            for (v, b) in row.iter_mut().zip(&self.b) {
                *v += b;
            }
        }
    }
}

/// What follows a linear layer on the same rows.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    None,
    Gelu,
    /// `y = layer_norm(y + residual)`.
    ResidualNorm(&'a [f32], &'a Norm),
}

impl NativeEncoder {
    /// `tables`: rows of the word, position and token-type embeddings.
    pub(crate) fn load(
        vb: &VarBuilder,
        shape: Shape,
        tables: [usize; 3],
        precision: Precision,
    ) -> Result<Self> {
        let [vocab, positions, types] = tables;
        let h = shape.hidden;
        if shape.heads == 0 || !h.is_multiple_of(shape.heads) {
            return Err(InferenceError::Config {
                file: "config.json".into(),
                message: format!(
                    "hidden_size {h} is not a multiple of num_attention_heads {}",
                    shape.heads
                ),
            });
        }
        let emb = vb.pp("embeddings");
        let word = flat(&emb.pp("word_embeddings"), &[vocab, h], "weight")?;
        let position = flat(&emb.pp("position_embeddings"), &[positions, h], "weight")?;
        let token_type = flat(&emb.pp("token_type_embeddings"), &[types, h], "weight")?;
        let emb_ln = norm(&emb.pp("LayerNorm"), h)?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let att = l.pp("attention");
            let s = att.pp("self");
            // Q, K and V as one [3H, H] layer: one pass over the activations instead of three.
            let mut w = Vec::with_capacity(3 * h * h);
            let mut b = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                w.extend(flat(&s.pp(part), &[h, h], "weight")?);
                b.extend(flat(&s.pp(part), &[h], "bias")?);
            }
            layers.push(Layer {
                qkv: Linear::new(w, b, 3 * h, h, precision),
                attn_out: Linear::load(&att.pp("output").pp("dense"), h, h, precision)?,
                ln1: norm(&att.pp("output").pp("LayerNorm"), h)?,
                inter: Linear::load(
                    &l.pp("intermediate").pp("dense"),
                    shape.intermediate,
                    h,
                    precision,
                )?,
                output: Linear::load(
                    &l.pp("output").pp("dense"),
                    h,
                    shape.intermediate,
                    precision,
                )?,
                ln2: norm(&l.pp("output").pp("LayerNorm"), h)?,
            });
        }
        Ok(Self {
            shape,
            word,
            position,
            token_type,
            emb_ln,
            layers,
            precision,
        })
    }

    pub(crate) fn precision(&self) -> Precision {
        self.precision
    }

    /// The last hidden state of every token, texts packed one after another:
    /// `[Σ len, hidden]`.
    pub(crate) fn forward(&self, batch: &[&Encoded], threads: usize) -> Result<Vec<f32>> {
        let h = self.shape.hidden;
        let rows: usize = batch.iter().map(|e| e.len()).sum();
        let vocab = self.word.len() / h;
        let types = self.token_type.len() / h;
        let positions = self.position.len() / h;
        let mut x = vec![0f32; rows * h];
        let mut r = 0;
        for e in batch {
            for (i, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                let (id, ty, pos) = (id as usize, ty as usize, self.shape.position_offset + i);
                if id >= vocab || ty >= types || pos >= positions {
                    return Err(InferenceError::invalid(
                        "input",
                        format!(
                            "token {id}, type {ty} or position {pos} is outside the model's tables"
                        ),
                    ));
                }
                let row = &mut x[r * h..(r + 1) * h];
                let (w, p, t) = (
                    &self.word[id * h..][..h],
                    &self.position[pos * h..][..h],
                    &self.token_type[ty * h..][..h],
                );
                for j in 0..h {
                    row[j] = w[j] + p[j] + t[j];
                }
                math::add_layer_norm(row, None, &self.emb_ln.g, &self.emb_ln.b, self.shape.eps);
                r += 1;
            }
        }
        let lens: Vec<usize> = batch.iter().map(|e| e.len()).collect();
        let threads = threads.max(1);
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut ctx = vec![0f32; rows * h];
        let mut mid = vec![0f32; rows * h];
        let mut inter = vec![0f32; rows * self.shape.intermediate];
        for layer in &self.layers {
            self.linear(&layer.qkv, &x, rows, &mut qkv, Epilogue::None, threads);
            self.attention(&qkv, &lens, &mut ctx, threads);
            self.linear(
                &layer.attn_out,
                &ctx,
                rows,
                &mut mid,
                Epilogue::ResidualNorm(&x, &layer.ln1),
                threads,
            );
            self.linear(
                &layer.inter,
                &mid,
                rows,
                &mut inter,
                Epilogue::Gelu,
                threads,
            );
            self.linear(
                &layer.output,
                &inter,
                rows,
                &mut x,
                Epilogue::ResidualNorm(&mid, &layer.ln2),
                threads,
            );
        }
        Ok(x)
    }

    /// One linear layer over all rows, split by rows across threads, each thread running
    /// its own epilogue.
    fn linear(
        &self,
        l: &Linear,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        epi: Epilogue,
        threads: usize,
    ) {
        // Whole 32-row blocks per thread, so the AMX path pads only the last one.
        let per = rows.div_ceil(threads).div_ceil(32) * 32;
        let eps = self.shape.eps;
        let run = |start: usize, ys: &mut [f32]| {
            let n = ys.len() / l.out;
            l.apply(&x[start * l.inp..(start + n) * l.inp], n, ys);
            match epi {
                Epilogue::None => {}
                Epilogue::Gelu => math::gelu_in_place(ys),
                Epilogue::ResidualNorm(res, norm) => {
                    for (i, row) in ys.chunks_exact_mut(l.out).enumerate() {
                        let r = &res[(start + i) * l.out..][..l.out];
                        math::add_layer_norm(row, Some(r), &norm.g, &norm.b, eps);
                    }
                }
            }
        };
        let chunks: Vec<(usize, &mut [f32])> = y[..rows * l.out]
            .chunks_mut(per.max(1) * l.out)
            .enumerate()
            .map(|(i, c)| (i * per, c))
            .collect();
        if chunks.len() <= 1 {
            for (start, ys) in chunks {
                run(start, ys);
            }
            return;
        }
        std::thread::scope(|s| {
            for (start, ys) in chunks {
                s.spawn(move || run(start, ys));
            }
        });
    }

    /// Scaled dot-product attention of each text over its own tokens only.
    fn attention(&self, qkv: &[f32], lens: &[usize], ctx: &mut [f32], threads: usize) {
        let h = self.shape.hidden;
        let heads = self.shape.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Deal texts to threads by cost (len²), each thread owning its texts' rows of ctx.
        let mut work: Vec<Vec<(usize, usize, &mut [f32])>> =
            (0..threads).map(|_| Vec::new()).collect();
        let mut load = vec![0usize; threads];
        let mut rest = ctx;
        let mut start = 0;
        for &len in lens {
            let (mine, tail) = rest.split_at_mut(len * h);
            rest = tail;
            let t = (0..threads).min_by_key(|&t| load[t]).unwrap_or(0);
            load[t] += len * len;
            work[t].push((start, len, mine));
            start += len;
        }
        let run = |items: Vec<(usize, usize, &mut [f32])>| {
            let mut scores = Vec::new();
            for (start, len, out) in items {
                for head in 0..heads {
                    let q_at = |i: usize| &qkv[(start + i) * 3 * h + head * d..][..d];
                    let k_at = |j: usize| &qkv[(start + j) * 3 * h + h + head * d..][..d];
                    let v_at = |j: usize| &qkv[(start + j) * 3 * h + 2 * h + head * d..][..d];
                    for i in 0..len {
                        let q = q_at(i);
                        scores.clear();
                        scores.extend((0..len).map(|j| {
                            q.iter().zip(k_at(j)).map(|(a, b)| a * b).sum::<f32>() * scale
                        }));
                        math::softmax_in_place(&mut scores);
                        let o = &mut out[i * h + head * d..][..d];
                        o.fill(0.0);
                        for (j, p) in scores.iter().enumerate() {
                            for (o, v) in o.iter_mut().zip(v_at(j)) {
                                *o += p * v;
                            }
                        }
                    }
                }
            }
        };
        std::thread::scope(|s| {
            let mut work = work.into_iter();
            let first = work.next();
            for items in work {
                if !items.is_empty() {
                    s.spawn(move || run(items));
                }
            }
            if let Some(items) = first {
                run(items);
            }
        });
    }
}
