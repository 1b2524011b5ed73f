//! Linear layers in 8-bit integers: on AVX-512-VNNI (`vpdpbusd`: four u8 × i8 products
//! summed into each i32 lane, 64 multiply-adds per instruction against f32's 16), for the
//! many CPUs that have VNNI but no bf16 dot product (Xeon Cascade Lake and Ice Lake), and on
//! AVX2 alone (AMD EPYC Rome and Milan, Intel before Cascade Lake), where both operands are
//! widened to i16 and `vpmaddwd` sums pairs of products into i32: 16 multiply-adds per
//! instruction against VNNI's 64, but the same exact integer sums, so both give the same
//! embeddings. (AVX2's `vpmaddubsw`
//! would be faster, but it sums a pair of u8 × i8 products in a saturating i16: exact only
//! with 7-bit weights, which cost too much: lowest cosine with f32 0.9986 over the 2,000
//! bench utterances, against 0.9995.)
//!
//! Both operands are quantised in groups of 64 along the inner dimension: weights once,
//! symmetric (`w ≈ sᵥ·q`, q in −127..=127, one scale per output and group); activations on
//! every call, asymmetric (`x ≈ sₓ·(q − z)`, q in 0..=255, one scale and zero point per row
//! and group), which suits both layer-norm outputs and GELU's lopsided ones. Per-row or
//! per-output scales alone lost too much: simulated on all-MiniLM-L6-v2 over 1,000 of the
//! bench utterances, the lowest cosine with f32 was 0.9982 with one scale per row and
//! output, 0.99948 with groups of 64 (benches/README.md).
//!
//! The kernel sums each group in i32 registers, then removes the zero point with the
//! weights' per-group sums, rescales and accumulates in f32 in C:
//! `y = b + Σ_g sₓ·sᵥ·(Σ q·qᵥ − z·Σ qᵥ)`. It keeps a `6 × 48` block of C in 18 registers;
//! per four inputs it loads 3 weight registers and broadcasts four input bytes per row.
//! (With 8 rows LLVM spilled accumulators to the stack, at about half this speed.) AVX2 has
//! 16 registers of half the width: a `4 × 16` block in 8, two inputs at a time.

use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Outputs per block: one register of i32.
const BLOCK_N: usize = 16;
/// Inputs per `vpdpbusd` lane.
const QUAD: usize = 4;
/// Inputs sharing one scale (and, for activations, one zero point).
pub(super) const GROUP: usize = 64;
const MR: usize = 6;
const NR: usize = 3;
/// Rows per AVX2 block (of one 16-output block).
const MR_AVX2: usize = 4;
/// Inputs per `vpmaddwd` lane.
const PAIR: usize = 2;

/// The instructions that multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX-512F, BW and VNNI.
    Vnni,
    /// AVX2 and FMA.
    Avx2,
}

impl Isa {
    /// Inputs per multiply: each output's weights for them lie side by side.
    fn step(self) -> usize {
        match self {
            Isa::Vnni => QUAD,
            Isa::Avx2 => PAIR,
        }
    }

    /// Whether this CPU runs it.
    pub(super) fn supported(self) -> bool {
        match self {
            Isa::Vnni => avx512(),
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        }
    }
}

fn avx512() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    })
}

/// The best kernel this CPU has: VNNI, else AVX2, else none.
pub(super) fn isa() -> Option<Isa> {
    [Isa::Vnni, Isa::Avx2].into_iter().find(|i| i.supported())
}

/// True when this CPU has either kernel.
pub(super) fn available() -> bool {
    isa().is_some()
}

/// A weight matrix `[out, in]` quantised and packed for the kernel. Block `nb` (outputs
/// `16·nb .. 16·nb + 16`) is contiguous: `in / 4` rows of 64 bytes, row `r` holding each
/// of the 16 outputs' inputs `4r .. 4r + 4` side by side (VNNI); for AVX2, `in / 2` rows
/// of 32 bytes, each output's inputs `2r, 2r + 1` side by side.
pub(super) struct PackedI8 {
    isa: Isa,
    data: Vec<i8>,
    /// `[in / 64, out]`: `w ≈ scale · q` within each group.
    scale: Vec<f32>,
    /// `[in / 64, out]`: Σ q over each group, to remove the activations' zero point.
    sum: Vec<f32>,
    bias: Vec<f32>,
    pub(super) out: usize,
    pub(super) inp: usize,
}

impl PackedI8 {
    /// `None` when the shape does not fit whole blocks and groups (the caller keeps f32).
    pub(super) fn pack(w: &[f32], b: &[f32], out: usize, inp: usize, isa: Isa) -> Option<Self> {
        if !out.is_multiple_of(BLOCK_N)
            || !inp.is_multiple_of(GROUP)
            || w.len() != out * inp
            || b.len() != out
        {
            return None;
        }
        let groups = inp / GROUP;
        let mut q = vec![0i8; out * inp];
        let mut scale = vec![0f32; groups * out];
        let mut sum = vec![0f32; groups * out];
        for (n, row) in w.chunks_exact(inp).enumerate() {
            for (g, group) in row.chunks_exact(GROUP).enumerate() {
                let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = if max > 0.0 { max / 127.0 } else { 1.0 };
                scale[g * out + n] = s;
                let mut total = 0i32;
                for (k, v) in group.iter().enumerate() {
                    let v = (v / s).round().clamp(-127.0, 127.0) as i8;
                    q[n * inp + g * GROUP + k] = v;
                    total += i32::from(v);
                }
                sum[g * out + n] = total as f32;
            }
        }
        let step = isa.step();
        let mut data = vec![0i8; out * inp];
        for nb in 0..out / BLOCK_N {
            let block = &mut data[nb * BLOCK_N * inp..][..BLOCK_N * inp];
            for r in 0..inp / step {
                for n in 0..BLOCK_N {
                    for j in 0..step {
                        block[r * step * BLOCK_N + n * step + j] =
                            q[(nb * BLOCK_N + n) * inp + r * step + j];
                    }
                }
            }
        }
        Some(Self {
            isa,
            data,
            scale,
            sum,
            bias: b.to_vec(),
            out,
            inp,
        })
    }

    /// The weight the kernel multiplies by, dequantised (for tests).
    #[cfg(test)]
    fn weight(&self, n: usize, k: usize) -> f32 {
        let step = self.isa.step();
        let (nb, i) = (n / BLOCK_N, n % BLOCK_N);
        let (r, j) = (k / step, k % step);
        let q = self.data[nb * BLOCK_N * self.inp + r * step * BLOCK_N + i * step + j];
        self.scale[k / GROUP * self.out + n] * f32::from(q)
    }
}

/// Activation rows quantised to u8: `x ≈ scale · (q − zero)` per row and group of 64.
#[derive(Default)]
pub(super) struct QuantRows {
    q: Vec<u8>,
    /// `[rows, in / 64]`.
    scale: Vec<f32>,
    /// `[rows, in / 64]`, as f32 for the kernel's epilogue.
    zero: Vec<f32>,
}

impl QuantRows {
    /// Quantises `rows` rows of `inp` values each (`inp` a multiple of 64). Call only after
    /// [`available`].
    pub(super) fn quantize(&mut self, x: &[f32], rows: usize, inp: usize) {
        let groups = inp / GROUP;
        self.q.resize(rows * inp, 0);
        self.scale.resize(rows * groups, 0.0);
        self.zero.resize(rows * groups, 0.0);
        let values = x[..rows * inp].as_chunks::<GROUP>().0;
        let quantised = self.q[..rows * inp].as_chunks_mut::<GROUP>().0;
        let avx512 = Isa::Vnni.supported();
        assert!(avx512 || Isa::Avx2.supported());
        for (i, (x, q)) in values.iter().zip(quantised).enumerate() {
            // SAFETY: the CPU has AVX-512F and BW, or AVX2 and FMA (asserted above).
            #[allow(unsafe_code)]
            let (s, z) = unsafe {
                if avx512 {
                    quantize_group(x, q)
                } else {
                    quantize_group_avx2(x, q)
                }
            };
            self.scale[i] = s;
            self.zero[i] = z;
        }
    }
}

/// A group's scale and zero point from its extremes: 255 steps between them, zero exact.
fn scale_and_zero(min: f32, max: f32) -> (f32, f32) {
    let range = max - min;
    let scale = if range > f32::MIN_POSITIVE && range.is_finite() {
        range / 255.0
    } else {
        1.0
    };
    (scale, (-min * (1.0 / scale)).round())
}

/// [`quantize_group`] in 256-bit registers, to the same bytes.
#[target_feature(enable = "avx2,fma")]
fn quantize_group_avx2(x: &[f32; GROUP], q: &mut [u8; GROUP]) -> (f32, f32) {
    // SAFETY: eight unaligned loads and two 32-byte stores inside the 64-value arrays.
    #[allow(unsafe_code)]
    unsafe {
        // Plain loops, no closures: a closure would not inherit this function's target
        // features, and each intrinsic would become a call.
        let mut v = [_mm256_setzero_ps(); 8];
        for (i, v) in v.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(x.as_ptr().add(8 * i));
        }
        let (mut lo, mut hi) = (v[0], v[0]);
        for v in &v[1..] {
            lo = _mm256_min_ps(lo, *v);
            hi = _mm256_max_ps(hi, *v);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        let min = lanes.iter().copied().fold(f32::INFINITY, f32::min);
        _mm256_storeu_ps(lanes.as_mut_ptr(), hi);
        let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (scale, zero) = scale_and_zero(min, max);
        let (inv_v, zero_v) = (_mm256_set1_ps(1.0 / scale), _mm256_set1_ps(zero));
        let (floor, ceil) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
        let mut ints = [_mm256_setzero_si256(); 8];
        for (int, v) in ints.iter_mut().zip(&v) {
            let t = _mm256_fmadd_ps(*v, inv_v, zero_v);
            *int = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, floor), ceil));
        }
        // The packs work within 128-bit lanes: each 32 bytes come out as the four inputs'
        // first halves, then their second halves; the permutation puts them in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for h in 0..2 {
            let [a, b, c, d] = [
                ints[4 * h],
                ints[4 * h + 1],
                ints[4 * h + 2],
                ints[4 * h + 3],
            ];
            let bytes = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(q.as_mut_ptr().add(32 * h).cast(), bytes);
        }
        (scale, zero)
    }
}

/// One group: returns its scale and zero point. Written with intrinsics: the compiler's own vectorisation of this loop (min/max, then
/// a saturating float-to-u8 cast) came out mostly scalar, 9% of the int8 profile.
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_group(x: &[f32; GROUP], q: &mut [u8; GROUP]) -> (f32, f32) {
    // SAFETY: four unaligned loads and four 16-byte stores inside the 64-value arrays.
    #[allow(unsafe_code)]
    unsafe {
        let v = [0, 16, 32, 48].map(|i| _mm512_loadu_ps(x.as_ptr().add(i)));
        let lo = _mm512_min_ps(_mm512_min_ps(v[0], v[1]), _mm512_min_ps(v[2], v[3]));
        let hi = _mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3]));
        let (min, max) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let (scale, zero) = scale_and_zero(min, max);
        let (inv_v, zero_v) = (_mm512_set1_ps(1.0 / scale), _mm512_set1_ps(zero));
        let (floor, ceil) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
        for (i, v) in v.iter().enumerate() {
            let t = _mm512_fmadd_ps(*v, inv_v, zero_v);
            let t = _mm512_min_ps(_mm512_max_ps(t, floor), ceil);
            // Round to nearest (the default rounding mode), then narrow: 0..=255 fits.
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t));
            _mm_storeu_si128(q.as_mut_ptr().add(16 * i).cast(), bytes);
        }
        (scale, zero)
    }
}

/// `c[rows, out] = x · wᵀ + b` for the rows `a` holds, on the kernel `w` was packed for.
/// Call only where that kernel is supported.
pub(super) fn matmul(w: &PackedI8, a: &QuantRows, rows: usize, c: &mut [f32]) {
    assert!(w.isa.supported());
    assert!(w.out.is_multiple_of(BLOCK_N) && w.inp.is_multiple_of(GROUP));
    let groups = w.inp / GROUP;
    assert!(a.q.len() >= rows * w.inp);
    assert!(a.scale.len() >= rows * groups && a.zero.len() >= rows * groups);
    assert!(c.len() >= rows * w.out);
    assert!(w.data.len() == w.out * w.inp && w.bias.len() == w.out);
    assert!(w.scale.len() == groups * w.out && w.sum.len() == groups * w.out);
    let blocks = w.out / BLOCK_N;
    let (mr_max, nr_max) = match w.isa {
        Isa::Vnni => (MR, NR),
        Isa::Avx2 => (MR_AVX2, 1),
    };
    // AVX2 multiplies i16: the activations are widened once per call, not once per block.
    let wide: Vec<i16> = match w.isa {
        Isa::Vnni => Vec::new(),
        Isa::Avx2 => a.q[..rows * w.inp].iter().map(|&q| i16::from(q)).collect(),
    };
    for nb in (0..blocks).step_by(nr_max) {
        let nr = nr_max.min(blocks - nb);
        for r in (0..rows).step_by(mr_max) {
            let mr = mr_max.min(rows - r);
            let n0 = nb * BLOCK_N;
            let args = Args {
                a: a.q[r * w.inp..].as_ptr(),
                a_wide: wide
                    .get(r * w.inp..)
                    .map_or(std::ptr::null(), <[i16]>::as_ptr),
                a_scale: a.scale[r * groups..].as_ptr(),
                a_zero: a.zero[r * groups..].as_ptr(),
                lda: w.inp,
                b: w.data[n0 * w.inp..].as_ptr(),
                b_scale: w.scale[n0..].as_ptr(),
                b_sum: w.sum[n0..].as_ptr(),
                bias: w.bias[n0..].as_ptr(),
                groups,
                out: w.out,
                c: c[r * w.out + n0..].as_mut_ptr(),
            };
            // SAFETY: rows r..r+mr of `a` (values, scales, zero points) and `c`, and blocks
            // nb..nb+nr of the weights and of each group's per-output vectors, lie inside
            // the slices (asserted above); the CPU has the kernel's features (asserted above).
            #[allow(unsafe_code)]
            unsafe {
                match w.isa {
                    Isa::Vnni => dispatch(mr, nr, &args),
                    Isa::Avx2 => dispatch_avx2(mr, &args),
                }
            }
        }
    }
}

struct Args {
    /// Row-major u8, `lda` per row; scales and zero points `groups` per row.
    a: *const u8,
    /// The same widened to i16 (AVX2 only; null for VNNI).
    a_wide: *const i16,
    a_scale: *const f32,
    a_zero: *const f32,
    lda: usize,
    /// The first block's packed weights; per-group vectors `out` apart.
    b: *const i8,
    b_scale: *const f32,
    b_sum: *const f32,
    bias: *const f32,
    groups: usize,
    /// Outputs of the whole layer: C's row stride and the per-group vectors' stride.
    out: usize,
    c: *mut f32,
}

/// # Safety
/// `args` must describe `mr` rows and `nr` blocks inside live buffers, and the CPU must
/// have AVX-512F, BW and VNNI.
#[allow(unsafe_code)]
unsafe fn dispatch(mr: usize, nr: usize, args: &Args) {
    // SAFETY: forwarded from the caller.
    unsafe { super::dispatch_kernel!(kernel, mr, nr, args) }
}

/// One `R × (16·N)` block of C over the whole of k: each group summed in i32 registers,
/// then dequantised and added to C (which starts from the bias).
///
/// # Safety
/// As [`dispatch`], with `R` rows and `N` blocks.
#[allow(unsafe_code)]
// Index loops on purpose: with iterators the accumulators stayed on the stack.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel<const R: usize, const N: usize>(args: &Args) {
    let lda = args.lda;
    let bstride = BLOCK_N * lda;
    let per_group = GROUP / QUAD;
    // SAFETY: every pointer stays inside the rows and blocks the caller vouched for: row
    // i's bytes at a + i·lda + k (k < lda), its group g's scale and zero point at
    // i·groups + g; block j's four-input row r at b + j·bstride + 64r (< bstride); group
    // g's per-output vectors at g·out + 16j; C's row i, block j at c + i·out + 16j.
    unsafe {
        for g in 0..args.groups {
            // Index loops over the const-sized arrays: with `iter_mut().enumerate()` the
            // accumulators stayed on the stack (a store after every `vpdpbusd`).
            let mut acc = [[_mm512_setzero_si512(); N]; R];
            for r in g * per_group..(g + 1) * per_group {
                let mut b = [_mm512_setzero_si512(); N];
                for j in 0..N {
                    b[j] = _mm512_loadu_si512(args.b.add(j * bstride + r * QUAD * BLOCK_N).cast());
                }
                for i in 0..R {
                    let quad = args
                        .a
                        .add(i * lda + QUAD * r)
                        .cast::<i32>()
                        .read_unaligned();
                    let a = _mm512_set1_epi32(quad);
                    for j in 0..N {
                        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], a, b[j]);
                    }
                }
            }
            for j in 0..N {
                let at = g * args.out + j * BLOCK_N;
                let sum = _mm512_loadu_ps(args.b_sum.add(at));
                let scale = _mm512_loadu_ps(args.b_scale.add(at));
                for i in 0..R {
                    let zero = _mm512_set1_ps(args.a_zero.add(i * args.groups + g).read());
                    let sx = _mm512_set1_ps(args.a_scale.add(i * args.groups + g).read());
                    let exact = _mm512_fnmadd_ps(zero, sum, _mm512_cvtepi32_ps(acc[i][j]));
                    let c = args.c.add(i * args.out + j * BLOCK_N);
                    let before = if g == 0 {
                        _mm512_loadu_ps(args.bias.add(j * BLOCK_N))
                    } else {
                        _mm512_loadu_ps(c)
                    };
                    let y = _mm512_fmadd_ps(exact, _mm512_mul_ps(scale, sx), before);
                    _mm512_storeu_ps(c, y);
                }
            }
        }
    }
}

/// # Safety
/// `args` must describe `mr` (at most [`MR_AVX2`]) rows and one block inside live
/// buffers, with the widened activations, and the CPU must have AVX2 and FMA.
#[allow(unsafe_code)]
unsafe fn dispatch_avx2(mr: usize, args: &Args) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match mr {
            1 => kernel_avx2::<1>(args),
            2 => kernel_avx2::<2>(args),
            3 => kernel_avx2::<3>(args),
            _ => kernel_avx2::<4>(args),
        }
    }
}

/// [`kernel`] for one 16-output block on AVX2, two inputs at a time: each half of the
/// block's row (eight outputs' two weights) is sign-extended to i16 as it is loaded, and
/// `vpmaddwd` against a row's two inputs (broadcast) adds both products to each output's
/// i32 lane.
///
/// # Safety
/// As [`dispatch_avx2`], with `R` rows.
#[allow(unsafe_code)]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize>(args: &Args) {
    let lda = args.lda;
    let per_group = GROUP / PAIR;
    // SAFETY: as in `kernel`, for block 0 only: its two-input row r is the 32 bytes at
    // b + 32r, outputs 0..8 in the first 16 and 8..16 in the second; row i's widened
    // inputs at a_wide + i·lda.
    unsafe {
        for g in 0..args.groups {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for r in g * per_group..(g + 1) * per_group {
                let row = args.b.add(r * PAIR * BLOCK_N);
                let w = [
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(row.cast())),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(row.add(16).cast())),
                ];
                for i in 0..R {
                    let pair = args
                        .a_wide
                        .add(i * lda + PAIR * r)
                        .cast::<i32>()
                        .read_unaligned();
                    let a = _mm256_set1_epi32(pair);
                    for h in 0..2 {
                        acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(a, w[h]));
                    }
                }
            }
            for h in 0..2 {
                let at = g * args.out + 8 * h;
                let sum = _mm256_loadu_ps(args.b_sum.add(at));
                let scale = _mm256_loadu_ps(args.b_scale.add(at));
                for i in 0..R {
                    let zero = _mm256_set1_ps(args.a_zero.add(i * args.groups + g).read());
                    let sx = _mm256_set1_ps(args.a_scale.add(i * args.groups + g).read());
                    let exact = _mm256_fnmadd_ps(zero, sum, _mm256_cvtepi32_ps(acc[i][h]));
                    let c = args.c.add(i * args.out + 8 * h);
                    let before = if g == 0 {
                        _mm256_loadu_ps(args.bias.add(8 * h))
                    } else {
                        _mm256_loadu_ps(c)
                    };
                    let y = _mm256_fmadd_ps(exact, _mm256_mul_ps(scale, sx), before);
                    _mm256_storeu_ps(c, y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * spread)
            .collect()
    }

    /// The kernels this CPU runs (a VNNI CPU runs both).
    fn kernels(test: &str) -> Vec<Isa> {
        let isas: Vec<Isa> = [Isa::Vnni, Isa::Avx2]
            .into_iter()
            .filter(|i| i.supported())
            .collect();
        if isas.is_empty() {
            eprintln!("SKIPPED {test}: this CPU has neither AVX2 nor AVX-512-VNNI");
        }
        isas
    }

    #[test]
    fn rows_round_trip_within_half_a_step() {
        if kernels("rows_round_trip_within_half_a_step").is_empty() {
            return;
        }
        let x = data(3 * 128, 1, 3.0);
        let mut q = QuantRows::default();
        q.quantize(&x, 3, 128);
        for r in 0..3 {
            for g in 0..2 {
                let i = r * 2 + g;
                let group = &x[i * 64..][..64];
                let (min, max) = group
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                assert!((q.scale[i] - (max - min) / 255.0).abs() < 1e-6);
                for (k, v) in group.iter().enumerate() {
                    let back = q.scale[i] * (f32::from(q.q[i * 64 + k]) - q.zero[i]);
                    assert!(
                        (back - v).abs() <= 0.5 * q.scale[i] + 1e-5,
                        "{v} came back as {back}"
                    );
                }
            }
        }
        // A constant row must not divide by zero.
        let mut q = QuantRows::default();
        q.quantize(&[2.0; 64], 1, 64);
        assert!(q.scale[0].is_finite());
    }

    #[test]
    fn matmul_matches_the_dequantised_product() {
        // 13 rows: two 6-row blocks and a 1-row tail (VNNI), three 4-row blocks and a
        // 1-row tail (AVX2); 8 and 10 blocks of 16 outputs: 3 + 3 + 2 and 3 + 3 + 3 + 1.
        for (isa, out) in kernels("matmul_matches_the_dequantised_product")
            .into_iter()
            .flat_map(|isa| [(isa, 128), (isa, 160)])
        {
            // Three groups of 64 inputs.
            let (rows, inp) = (13, 192);
            let w = data(out * inp, 2, 0.5);
            let b = data(out, 3, 1.0);
            let x = data(rows * inp, 4, 4.0);
            let packed = PackedI8::pack(&w, &b, out, inp, isa).unwrap();
            let mut a = QuantRows::default();
            a.quantize(&x, rows, inp);
            let mut c = vec![f32::NAN; rows * out];
            matmul(&packed, &a, rows, &mut c);
            for r in 0..rows {
                for o in 0..out {
                    // The same quantised values multiplied in f64: only rounding differs.
                    let want: f64 = (0..inp)
                        .map(|k| {
                            let i = r * (inp / 64) + k / 64;
                            let xq = f64::from(a.scale[i])
                                * (f64::from(a.q[r * inp + k]) - f64::from(a.zero[i]));
                            xq * f64::from(packed.weight(o, k))
                        })
                        .sum::<f64>()
                        + f64::from(b[o]);
                    let got = f64::from(c[r * out + o]);
                    assert!(
                        (got - want).abs() < 1e-3,
                        "{isa:?} {out}: {r},{o}: {got} vs {want}"
                    );
                    // And close to the unquantised product.
                    let exact: f32 = (0..inp)
                        .map(|k| x[r * inp + k] * w[o * inp + k])
                        .sum::<f32>()
                        + b[o];
                    assert!(
                        (got as f32 - exact).abs() < 0.35,
                        "{isa:?} {r},{o}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn both_quantisers_give_the_same_bytes() {
        if !Isa::Vnni.supported() {
            eprintln!("SKIPPED both_quantisers_give_the_same_bytes: no AVX-512 to compare with");
            return;
        }
        for seed in 0..8 {
            let x: [f32; GROUP] = std::array::from_fn(|i| data(GROUP, seed, 3.0)[i] + seed as f32);
            let (mut a, mut b) = ([0u8; GROUP], [0u8; GROUP]);
            // SAFETY: the CPU has AVX-512F and BW (checked above), hence AVX2 and FMA.
            #[allow(unsafe_code)]
            let (sa, sb) = unsafe { (quantize_group(&x, &mut a), quantize_group_avx2(&x, &mut b)) };
            assert_eq!(sa, sb);
            assert_eq!(a, b);
        }
    }

    /// Every activation at 255 and every weight at its largest: the case where pairwise
    /// sums of u8 × i8 products in an i16 (AVX2's `vpmaddubsw`) would saturate.
    #[test]
    fn the_largest_products_do_not_saturate() {
        for isa in kernels("the_largest_products_do_not_saturate") {
            let (out, inp) = (16, 128);
            for sign in [1.0f32, -1.0] {
                let w = vec![0.5 * sign; out * inp];
                let b = vec![0.0; out];
                // One zero per group sets the zero point at 0; every other input quantises to 255.
                let x: Vec<f32> = (0..inp)
                    .map(|k| if k % GROUP == 0 { 0.0 } else { 2.0 })
                    .collect();
                let packed = PackedI8::pack(&w, &b, out, inp, isa).unwrap();
                let mut a = QuantRows::default();
                a.quantize(&x, 1, inp);
                assert!(a.q[1..GROUP].iter().all(|&q| q == 255));
                let mut c = vec![f32::NAN; out];
                matmul(&packed, &a, 1, &mut c);
                let exact: f32 = x.iter().map(|v| v * 0.5 * sign).sum();
                for got in c {
                    assert!((got - exact).abs() < 1e-3, "{isa:?}: {got} vs {exact}");
                }
            }
        }
    }

    #[test]
    fn both_kernels_give_the_same_outputs() {
        if !Isa::Vnni.supported() {
            eprintln!(
                "SKIPPED both_kernels_give_the_same_outputs: no AVX-512-VNNI to compare with"
            );
            return;
        }
        let (rows, out, inp) = (7, 48, 256);
        let w = data(out * inp, 5, 0.7);
        let b = data(out, 6, 1.0);
        let x = data(rows * inp, 7, 2.5);
        let mut a = QuantRows::default();
        a.quantize(&x, rows, inp);
        let run = |isa| {
            let packed = PackedI8::pack(&w, &b, out, inp, isa).unwrap();
            let mut c = vec![f32::NAN; rows * out];
            matmul(&packed, &a, rows, &mut c);
            c
        };
        // Exact integer sums, the same epilogue: equal to the bit.
        assert_eq!(run(Isa::Vnni), run(Isa::Avx2));
    }
}
