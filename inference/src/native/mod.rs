//! A CPU encoder written for batches of short texts, beside Candle's general one.
//!
//! Candle runs BERT as a chain of tensor ops over a padded batch: every op allocates, GELU
//! is libm's scalar `erff`, and linear layers are f32 `gemm`. Here the batch is packed
//! (no padding rows: each text's tokens only), every linear layer is one call whose
//! epilogue (bias, GELU, residual + layer norm) runs on the same thread and rows. With
//! `dtype = "bf16"` the linear layers multiply bf16 with f32 accumulation: on AMX tiles
//! where the CPU has them, else with AVX-512-BF16 (cosine ≥ 0.999 with f32, measured in
//! `inference/tests/parity.rs`). The f32 path keeps Candle's numbers (cosine ≥ 0.9999 with
//! sentence-transformers).

/// Calls `$kernel::<R, N>($args)` for a block of `$mr` rows (1..=6) and `$nr` blocks of
/// 16 outputs (1..=3): the SIMD kernels' shapes are const generics so that their
/// accumulators are fixed-size arrays the compiler keeps in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! dispatch_kernel {
    ($kernel:ident, $mr:expr, $nr:expr, $args:expr) => {
        match $nr {
            1 => $crate::native::dispatch_kernel!(@rows $kernel, $mr, 1, $args),
            2 => $crate::native::dispatch_kernel!(@rows $kernel, $mr, 2, $args),
            _ => $crate::native::dispatch_kernel!(@rows $kernel, $mr, 3, $args),
        }
    };
    (@rows $kernel:ident, $mr:expr, $nr:literal, $args:expr) => {
        match $mr {
            1 => $kernel::<1, $nr>($args),
            2 => $kernel::<2, $nr>($args),
            3 => $kernel::<3, $nr>($args),
            4 => $kernel::<4, $nr>($args),
            5 => $kernel::<5, $nr>($args),
            _ => $kernel::<6, $nr>($args),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use dispatch_kernel;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod bf16;
#[cfg(target_arch = "x86_64")]
mod fp32;
mod helpers;
#[cfg(target_arch = "x86_64")]
mod int8;
mod math;

use std::sync::Arc;

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
    /// The same numbers with AVX-512-BF16 dot products (`vdpbf16ps`).
    Avx512Bf16,
    /// 8-bit weights and activations on AVX-512-VNNI (`vpdpbusd`) or AVX2 (`vpmaddwd`
    /// on the same values widened to i16), i32 accumulation.
    Int8,
}

impl Precision {
    /// bf16 when asked for and this CPU has a bf16 dot product (AMX first), else `None`.
    pub(crate) fn for_dtype(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(Self::F32),
            DType::BF16 if amx_available() => Some(Self::AmxBf16),
            DType::BF16 if avx512_bf16_available() => Some(Self::Avx512Bf16),
            _ => None,
        }
    }

    /// int8 where this CPU has VNNI or AVX2, else `None`.
    pub(crate) fn int8() -> Option<Self> {
        int8_available().then_some(Self::Int8)
    }

    /// What [`crate::EmbeddingModel::engine`] reports.
    pub(crate) fn engine(self) -> &'static str {
        match self {
            Self::F32 => "native-f32",
            Self::AmxBf16 => "native-amx-bf16",
            Self::Avx512Bf16 => "native-avx512-bf16",
            Self::Int8 if int8_vnni() => "native-vnni-int8",
            Self::Int8 => "native-avx2-int8",
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

/// True when this CPU has AVX-512-BF16 dot products.
pub fn avx512_bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU runs int8: on AVX-512-VNNI, or on AVX2 (same results, slower).
pub fn int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        int8::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The engine a model loaded with dtype int8 reports on this CPU, if it has int8.
pub fn int8_engine() -> Option<&'static str> {
    Precision::int8().map(Precision::engine)
}

/// True when int8 runs on AVX-512-VNNI rather than AVX2.
fn int8_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        int8::isa() == Some(int8::Isa::Vnni)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weights `[out, inp]` and inputs `[rows, inp]` for the kernels' tests: varied values
/// exact in bf16, so only the order of summation differs between kernels.
#[cfg(test)]
pub(crate) fn test_operands(rows: usize, out: usize, inp: usize) -> (Vec<f32>, Vec<f32>) {
    let w = (0..out * inp)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect();
    let x = (0..rows * inp)
        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
        .collect();
    (w, x)
}

struct Linear {
    /// f32 weights; emptied once they are packed for a kernel.
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
    packed: Option<bf16::PackedBf16>,
    #[cfg(target_arch = "x86_64")]
    int8: Option<int8::PackedI8>,
    /// f32 weights packed for the AVX2 / AVX-512 kernel, which then takes every pass
    /// (`w` is empty).
    #[cfg(target_arch = "x86_64")]
    fp32: Option<fp32::PackedF32>,
    precision: Precision,
}

struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    qkv: Arc<Linear>,
    attn_out: Arc<Linear>,
    ln1: Norm,
    inter: Arc<Linear>,
    output: Arc<Linear>,
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
    /// Kept threads that take shares of a lone text's layers.
    helpers: helpers::Helpers,
    /// Share passes the packed f32 kernel takes too (`LoadOptions::share_lone_texts`).
    share_packed: bool,
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
    fn new(mut w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize, precision: Precision) -> Self {
        let packed = match precision {
            Precision::AmxBf16 | Precision::Avx512Bf16 => bf16::PackedBf16::pack(&w, out, inp),
            Precision::F32 | Precision::Int8 => None,
        };
        #[cfg(target_arch = "x86_64")]
        let int8 = match precision {
            Precision::Int8 => {
                int8::isa().and_then(|isa| int8::PackedI8::pack(&w, &b, out, inp, isa))
            }
            _ => None,
        };
        #[cfg(target_arch = "x86_64")]
        let fp32 = match precision {
            Precision::F32 => fp32::PackedF32::pack(&w, out, inp),
            _ => None,
        };
        #[cfg(target_arch = "x86_64")]
        let quantised = packed.is_some() || int8.is_some() || fp32.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let quantised = packed.is_some();
        if quantised {
            w = Vec::new();
        }
        Self {
            w,
            b,
            out,
            inp,
            packed,
            #[cfg(target_arch = "x86_64")]
            int8,
            #[cfg(target_arch = "x86_64")]
            fp32,
            precision,
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
        if let Some(w) = &self.int8 {
            let mut a = int8::QuantRows::default();
            a.quantize(x, rows, self.inp);
            // Adds the bias in its epilogue.
            int8::matmul(w, &a, rows, y);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = &self.packed {
            // AMX multiplies whole 32-row tiles: pad A with zero rows, drop C's extra rows.
            let padded = match self.precision {
                Precision::AmxBf16 => rows.div_ceil(amx::ROWS) * amx::ROWS,
                _ => rows,
            };
            let mut a = vec![0u16; padded * self.inp];
            bf16::convert(&x[..rows * self.inp], &mut a[..rows * self.inp]);
            match self.precision {
                Precision::AmxBf16 if padded != rows => {
                    let mut c = vec![0f32; padded * self.out];
                    amx::matmul(p, &a, padded, &mut c);
                    y[..rows * self.out].copy_from_slice(&c[..rows * self.out]);
                }
                Precision::AmxBf16 => amx::matmul(p, &a, rows, y),
                _ => avx512::matmul(p, &a, rows, y),
            }
            math::add_bias(&mut y[..rows * self.out], &self.b);
            return;
        }
        self.apply_cols(x, rows, 0..self.out, y);
    }
}

/// The least work (multiply-adds) handed to another thread when one text's layer is
/// shared by outputs: ~10 µs of f32 on the 2-core development machines, so only a text of
/// a token or two stays on one thread (a floor of 2^20 measured slower on one-text passes).
const MIN_MACS_PER_SHARE: usize = 1 << 17;

/// The fewest rows a thread is spawned for when a layer is split by rows.
const MIN_ROWS_PER_THREAD: usize = 64;

/// Up to this many rows (a few texts) a layer is shared by outputs over kept threads;
/// above it by rows over threads spawned for the layer, whose cost the larger share pays
/// for, and which spares copying the input and the outputs.
const MAX_ROWS_BY_OUTPUTS: usize = 256;

impl Linear {
    /// Whether `rows` rows are worth sharing by outputs over `threads` threads: on
    /// `gemm`'s f32 path (CPUs without AVX2, other architectures), where each share holds
    /// enough multiply-adds to pay for handing it over, and on the packed f32 kernel where
    /// `packed` says so. The int8 and packed f32 kernels do a short text's pass in
    /// ~2.6-19 ms on one thread: shared, a lone answer's p50 fell by 0.5-6 ms, but its CPU
    /// rose by a fifth to a half (the threads spin between layers), and at half capacity
    /// the p99 rose on one machine and held on another (benches/README.md); the bf16
    /// kernels take whole layers.
    fn splits_by_outputs(&self, rows: usize, threads: usize, packed: bool) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.int8.is_some() || (self.fp32.is_some() && !packed) {
            return false;
        }
        self.packed.is_none() && rows * self.inp * self.out / threads >= MIN_MACS_PER_SHARE
    }

    /// Outputs `cols` of [`Linear::apply`] (bias included) of f32 weights into
    /// `y[rows, cols.len()]`.
    fn apply_cols(&self, x: &[f32], rows: usize, cols: std::ops::Range<usize>, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = &self.fp32 {
            let n = cols.len();
            p.matmul_cols(x, rows, cols.clone(), y);
            math::add_bias(&mut y[..rows * n], &self.b[cols]);
            return;
        }
        let (n, k) = (cols.len(), self.inp);
        // SAFETY: the pointers cover exactly rows×k input values, the n×k weights from
        // output `cols.start` on and rows×n outputs of live slices (lengths follow from how
        // the encoder sizes its buffers; asserted here), and gemm reads and writes nothing
        // outside the strides it is given.
        assert!(x.len() >= rows * k && y.len() >= rows * n);
        assert!(cols.end <= self.out && self.w.len() == self.out * k);
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                self.w[cols.start * k..].as_ptr(),
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
        math::add_bias(&mut y[..rows * n], &self.b[cols]);
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
                qkv: Arc::new(Linear::new(w, b, 3 * h, h, precision)),
                attn_out: Arc::new(Linear::load(
                    &att.pp("output").pp("dense"),
                    h,
                    h,
                    precision,
                )?),
                ln1: norm(&att.pp("output").pp("LayerNorm"), h)?,
                inter: Arc::new(Linear::load(
                    &l.pp("intermediate").pp("dense"),
                    shape.intermediate,
                    h,
                    precision,
                )?),
                output: Arc::new(Linear::load(
                    &l.pp("output").pp("dense"),
                    h,
                    shape.intermediate,
                    precision,
                )?),
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
            helpers: helpers::Helpers::new(crate::cpu_threads().saturating_sub(1)),
            share_packed: false,
        })
    }

    /// Whether a few texts' passes on the packed f32 kernel are shared by outputs with kept
    /// threads as `gemm`'s are (off by default: see [`Linear::splits_by_outputs`]).
    pub(crate) fn share_packed_passes(&mut self, on: bool) {
        self.share_packed = on;
    }

    pub(crate) fn precision(&self) -> Precision {
        self.precision
    }

    /// The last hidden state of every token, texts packed one after another:
    /// `[Σ len, hidden]`.
    pub(crate) fn forward(&self, batch: &[&Encoded], threads: usize) -> Result<Vec<f32>> {
        self.forward_upto(batch, threads, self.layers.len())
    }

    pub(crate) fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The hidden state of every token after the first `layers` layers (the embeddings'
    /// output for 0), packed as [`NativeEncoder::forward`] packs it: what a fine-tune of
    /// the layers above starts from.
    pub(crate) fn forward_upto(
        &self,
        batch: &[&Encoded],
        threads: usize,
        layers: usize,
    ) -> Result<Vec<f32>> {
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
        for layer in self.layers.iter().take(layers) {
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

    /// One linear layer over all rows: a few texts' rows shared by outputs over kept
    /// threads (f32 on `gemm`), more split by rows across threads, each running its own
    /// epilogue.
    fn linear(
        &self,
        l: &Arc<Linear>,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        epi: Epilogue,
        threads: usize,
    ) {
        if threads > 1
            && rows > 0
            && rows <= MAX_ROWS_BY_OUTPUTS
            && l.splits_by_outputs(rows, threads, self.share_packed)
        {
            return self.linear_by_outputs(l, x, rows, y, epi, threads);
        }
        // Whole 32-row blocks per thread, so the AMX path pads only the last one; and at
        // least MIN_ROWS_PER_THREAD rows, since each thread is spawned for this one layer.
        let per = rows
            .div_ceil(threads)
            .div_ceil(32)
            .max(MIN_ROWS_PER_THREAD / 32)
            * 32;
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

    /// [`NativeEncoder::linear`] for a few texts' rows (a lone caller's one text has too
    /// few to share by 32-row blocks): each thread computes some of the outputs of every
    /// row, so a lone answer's model pass uses every core the batcher gave it instead of
    /// one. The other shares go to kept threads ([`helpers`]); where none is free, this
    /// thread computes them all.
    fn linear_by_outputs(
        &self,
        l: &Arc<Linear>,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        epi: Epilogue,
        threads: usize,
    ) {
        let shares = 1 + self.helpers.available(threads - 1);
        if shares == 1 {
            // No kept thread free: the plain pass on this thread, without the copies.
            return self.linear(l, x, rows, y, epi, 1);
        }
        let per = l.out.div_ceil(16).div_ceil(shares) * 16;
        let ranges: Vec<std::ops::Range<usize>> = (0..l.out)
            .step_by(per)
            .map(|s| s..(s + per).min(l.out))
            .collect();
        let input: Arc<[f32]> = Arc::from(&x[..rows * l.inp]);
        let gelu = matches!(epi, Epilogue::Gelu);
        let (reply, replies) = flume::bounded(ranges.len());
        for (index, cols) in ranges.iter().enumerate().skip(1) {
            self.helpers.send(helpers::Job {
                linear: Arc::clone(l),
                input: Arc::clone(&input),
                rows,
                cols: cols.clone(),
                gelu,
                reply: reply.clone(),
                index,
            });
        }
        drop(reply);
        let mut parts: Vec<Option<Vec<f32>>> = vec![None; ranges.len()];
        parts[0] = Some(helpers::share(l, &input, rows, ranges[0].clone(), gelu));
        for _ in 1..ranges.len() {
            match helpers::next(&replies) {
                Some((index, part)) => parts[index] = part,
                None => break,
            }
        }
        for (cols, part) in ranges.iter().zip(parts) {
            // A share whose thread failed (a panic there) is computed here, once more.
            let part = part.unwrap_or_else(|| helpers::share(l, &input, rows, cols.clone(), gelu));
            let n = cols.len();
            for (r, src) in part.chunks_exact(n).enumerate() {
                y[r * l.out + cols.start..][..n].copy_from_slice(src);
            }
        }
        if let Epilogue::ResidualNorm(res, norm) = epi {
            for (row, r) in y[..rows * l.out]
                .chunks_exact_mut(l.out)
                .zip(res.chunks_exact(l.out))
            {
                math::add_layer_norm(row, Some(r), &norm.g, &norm.b, self.shape.eps);
            }
        }
    }

    /// Scaled dot-product attention of each text over its own tokens only.
    fn attention(&self, qkv: &[f32], lens: &[usize], ctx: &mut [f32], threads: usize) {
        let h = self.shape.hidden;
        let heads = self.shape.heads;
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
            let (mut scores, mut kt) = (Vec::new(), Vec::new());
            for (start, len, out) in items {
                let qkv = &qkv[start * 3 * h..(start + len) * 3 * h];
                attend(qkv, len, heads, out, &mut scores, &mut kt);
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

math::multiversion! {
    /// Scaled dot-product attention of one text: `out[len, h]` from its `qkv[len, 3h]`.
    ///
    /// Each head's keys are transposed first so that a query's scores against all keys
    /// are one vectorised loop over keys (a dot product per key spent its time in
    /// horizontal sums: attention was a third of the int8 profile). Plain index loops
    /// throughout: an iterator adaptor's closure is compiled as a function of its own,
    /// without this variant's target features.
    fn attend(qkv: &[f32], len: usize, heads: usize, out: &mut [f32], scores: &mut Vec<f32>, kt: &mut Vec<f32>) {
        let h = out.len() / len.max(1);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Keys transposed, each row padded to whole 16-lane blocks with zeros.
        let ld = len.next_multiple_of(16);
        scores.resize(ld, 0.0);
        kt.clear();
        kt.resize(d * ld, 0.0);
        for head in 0..heads {
            for j in 0..len {
                let k = &qkv[j * 3 * h + h + head * d..][..d];
                for c in 0..d {
                    kt[c * ld + j] = k[c];
                }
            }
            for i in 0..len {
                let q = &qkv[i * 3 * h + head * d..][..d];
                // 16 keys at a time in one register-sized accumulator, over all of d.
                for jb in (0..ld).step_by(16) {
                    let mut acc = [0f32; 16];
                    for c in 0..d {
                        let qc = q[c] * scale;
                        let row = &kt[c * ld + jb..][..16];
                        for t in 0..16 {
                            acc[t] = qc.mul_add(row[t], acc[t]);
                        }
                    }
                    scores[jb..jb + 16].copy_from_slice(&acc);
                }
                let s = &mut scores[..len];
                math::softmax_in_place(s);
                let o = &mut out[i * h + head * d..][..d];
                if d.is_multiple_of(16) {
                    // 16 outputs at a time in a register-sized accumulator, over all keys.
                    for cb in (0..d).step_by(16) {
                        let mut acc = [0f32; 16];
                        for j in 0..len {
                            let p = s[j];
                            let v = &qkv[j * 3 * h + 2 * h + head * d + cb..][..16];
                            for t in 0..16 {
                                acc[t] = p.mul_add(v[t], acc[t]);
                            }
                        }
                        o[cb..cb + 16].copy_from_slice(&acc);
                    }
                } else {
                    o.fill(0.0);
                    for j in 0..len {
                        let p = s[j];
                        let v = &qkv[j * 3 * h + 2 * h + head * d..][..d];
                        for c in 0..d {
                            o[c] = p.mul_add(v[c], o[c]);
                        }
                    }
                }
            }
        }
    }
}
