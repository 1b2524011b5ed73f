//! f32 linear layers with weights packed once at load, on AVX2 + FMA or AVX-512F.
//!
//! `gemm` vectorises along the rows of the input and packs nothing for a few rows: a lone
//! text of 15 tokens fills a fraction of each register and every weight is loaded on its
//! own to be broadcast. Here the vector runs along the outputs instead, over weights
//! stored in blocks of 16 outputs with the inputs in order (each block `in` rows of 16
//! values), so each load feeds up to six rows and the weights stream from memory once per
//! pass. Measured against `gemm` at every batch size (benches/README.md): on an AVX2 EPYC
//! 3.3x as fast for one text and 2x for batches of 32; on an AVX-512 EPYC (Zen 4), where
//! `gemm` runs its own AVX-512 kernels, 1.3x for one text and 2.5x for batches of 32 with
//! the AVX-512 variant here. So it takes every f32 pass on any CPU with AVX2 and FMA, and
//! the plain layout is dropped. Each output is summed over its inputs in order with FMA,
//! whatever the share of outputs computed and whichever variant ran, so a text's vector
//! does not depend on how its layer was shared nor on the CPU's vector width.

use std::arch::x86_64::*;
use std::ops::Range;
use std::sync::OnceLock;

/// Outputs per block: two AVX2 registers.
pub(super) const BLOCK_N: usize = 16;
/// Rows of the input per microkernel call: 6 × 16 outputs are 12 of the 16 registers.
const MR: usize = 6;

/// Blocks of 16 outputs per call of the AVX-512 kernel: 6 rows × 3 blocks are 18 of its
/// 32 registers.
const NR_WIDE: usize = 3;

/// True when this CPU has AVX2 and FMA.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// True when this CPU has AVX-512F: the kernel runs on 16-lane registers, one per block.
fn wide() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// A weight matrix `[out, in]` in blocks of [`BLOCK_N`] outputs: block `nb` holds
/// `in` rows of 16 values, `data[nb·16·in + k·16 + n] = w[(16·nb + n)·in + k]`.
pub(super) struct PackedF32 {
    data: Vec<f32>,
    out: usize,
    inp: usize,
}

impl PackedF32 {
    /// `None` when this CPU lacks AVX2 or FMA, or `out` is not whole blocks (the caller
    /// keeps `gemm` for every pass).
    pub(super) fn pack(w: &[f32], out: usize, inp: usize) -> Option<Self> {
        if !available() || out == 0 || !out.is_multiple_of(BLOCK_N) || w.len() != out * inp {
            return None;
        }
        let mut data = vec![0f32; out * inp];
        for (nb, block) in data.chunks_exact_mut(BLOCK_N * inp).enumerate() {
            for (k, row) in block.chunks_exact_mut(BLOCK_N).enumerate() {
                for (n, v) in row.iter_mut().enumerate() {
                    *v = w[(nb * BLOCK_N + n) * inp + k];
                }
            }
        }
        Some(Self { data, out, inp })
    }

    /// `y[rows, cols.len()] = x[rows, in] · w[cols]ᵀ` (no bias); `cols` starts and ends on
    /// a block boundary.
    pub(super) fn matmul_cols(&self, x: &[f32], rows: usize, cols: Range<usize>, y: &mut [f32]) {
        self.matmul_cols_on(x, rows, cols, y, wide());
    }

    /// [`PackedF32::matmul_cols`] on the AVX-512 kernel when `wide`, else the AVX2 one.
    fn matmul_cols_on(
        &self,
        x: &[f32],
        rows: usize,
        cols: Range<usize>,
        y: &mut [f32],
        wide: bool,
    ) {
        let (k, n) = (self.inp, cols.len());
        assert!(cols.start.is_multiple_of(BLOCK_N) && n.is_multiple_of(BLOCK_N));
        assert!(cols.end <= self.out && self.data.len() == self.out * k);
        assert!(x.len() >= rows * k && y.len() >= rows * n);
        assert!(available());
        assert!(!wide || self::wide());
        // Blocks outer, rows inner: a block of weights (16 × in) stays in L1/L2 while
        // every row passes over it, and is read from memory once. The AVX-512 kernel takes
        // up to NR_WIDE blocks per call, so each broadcast input feeds that many registers.
        let per_call = if wide { NR_WIDE } else { 1 };
        let blocks = cols.start / BLOCK_N..cols.end / BLOCK_N;
        for nb in blocks.clone().step_by(per_call) {
            let nr = (blocks.end - nb).min(per_call);
            let j = nb - blocks.start;
            for r in (0..rows).step_by(MR) {
                let args = Args {
                    a: x[r * k..].as_ptr(),
                    k,
                    b: self.data[nb * BLOCK_N * k..].as_ptr(),
                    c: y[r * n + j * BLOCK_N..].as_mut_ptr(),
                    ldc: n,
                };
                // SAFETY: rows r..r+mr of `x` (k values each) and of `y` (n each, from
                // column 16j), and blocks nb..nb+nr of the weights (16·k values each), lie
                // inside the slices (asserted above); the CPU has AVX2 and FMA, and
                // AVX-512F where `wide` (asserted above).
                #[allow(unsafe_code)]
                unsafe {
                    if wide {
                        super::dispatch_kernel!(kernel_wide, MR.min(rows - r), nr, &args)
                    } else {
                        super::dispatch_kernel!(@rows kernel, MR.min(rows - r), 1, &args)
                    }
                }
            }
        }
    }
}

struct Args {
    a: *const f32,
    k: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
}

/// One `R × 16` block of C over the whole of k (`N` is always 1: the dispatch macro is
/// shared with the kernels that take several blocks).
///
/// # Safety
/// `args` must describe `R` rows and one weight block inside live buffers, and the CPU
/// must have AVX2 and FMA.
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const N: usize>(args: &Args) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: row i's input p is at a + i·k + p (p < k), the block's row p at b + 16p,
    // and C's row i at c + i·ldc (16 values): inside what the caller vouched for.
    unsafe {
        for p in 0..args.k {
            let b0 = _mm256_loadu_ps(args.b.add(p * BLOCK_N));
            let b1 = _mm256_loadu_ps(args.b.add(p * BLOCK_N + 8));
            for (i, row) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*args.a.add(i * args.k + p));
                row[0] = _mm256_fmadd_ps(a, b0, row[0]);
                row[1] = _mm256_fmadd_ps(a, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(args.c.add(i * args.ldc), row[0]);
            _mm256_storeu_ps(args.c.add(i * args.ldc + 8), row[1]);
        }
    }
}

/// One `R × 16N` block of C over the whole of k, on AVX-512: the same sums as [`kernel`]
/// (each output's products added in order of the inputs with FMA), so a vector does not
/// depend on which of the two ran.
///
/// # Safety
/// `args` must describe `R` rows and `N` consecutive weight blocks inside live buffers, and
/// the CPU must have AVX-512F.
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_wide<const R: usize, const N: usize>(args: &Args) {
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    let stride = BLOCK_N * args.k;
    // SAFETY: row i's input p is at a + i·k + p (p < k), block j's row p at
    // b + j·16k + 16p, and C's row i at c + i·ldc (16N values): inside what the caller
    // vouched for.
    unsafe {
        for p in 0..args.k {
            let mut b = [_mm512_setzero_ps(); N];
            for (j, bj) in b.iter_mut().enumerate() {
                *bj = _mm512_loadu_ps(args.b.add(j * stride + p * BLOCK_N));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*args.a.add(i * args.k + p));
                for (c, bj) in row.iter_mut().zip(&b) {
                    *c = _mm512_fmadd_ps(a, *bj, *c);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                _mm512_storeu_ps(args.c.add(i * args.ldc + j * BLOCK_N), *c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], rows: usize, out: usize, inp: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * out];
        for r in 0..rows {
            for o in 0..out {
                y[r * out + o] = (0..inp)
                    .map(|k| f64::from(x[r * inp + k]) * f64::from(w[o * inp + k]))
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn the_kernel_matches_a_plain_product_and_a_share_matches_the_whole() {
        if !available() {
            eprintln!("SKIPPED the f32 kernel's test: this CPU lacks AVX2 or FMA");
            return;
        }
        // 13 rows: two whole 6-row blocks and a 1-row tail; 64 rows: the most taken.
        for (rows, out, inp) in [(13, 80, 96), (64, 48, 40), (1, 16, 7)] {
            let (w, x) = crate::native::test_operands(rows, out, inp);
            let p = PackedF32::pack(&w, out, inp).unwrap();
            let want = naive(&x, &w, rows, out, inp);
            let mut y = vec![f32::NAN; rows * out];
            p.matmul_cols(&x, rows, 0..out, &mut y);
            for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 1e-3, "{rows}x{out}: [{i}] {g} vs {e}");
            }
            if out > 32 {
                let cols = 16..out - 16;
                let mut part = vec![f32::NAN; rows * cols.len()];
                p.matmul_cols(&x, rows, cols.clone(), &mut part);
                for r in 0..rows {
                    assert_eq!(
                        part[r * cols.len()..][..cols.len()],
                        y[r * out + cols.start..][..cols.len()],
                        "row {r}: a share differs from the whole"
                    );
                }
            }
        }
    }

    #[test]
    fn both_kernels_give_the_same_bits() {
        if !available() || !wide() {
            eprintln!("SKIPPED the f32 kernels' comparison: this CPU lacks AVX-512F");
            return;
        }
        // 7 blocks: two calls of three and one of one; 11 rows: a 6-row and a 5-row call.
        // Values that round (not the small multiples of 1/8 of `test_operands`), so that
        // sums taken in another order or without FMA give other bits.
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed) % 1013) as f32 / 337.0 - 1.5)
                .collect()
        };
        for (rows, out, inp) in [(11, 112, 96), (1, 48, 384), (64, 32, 40)] {
            let (w, x) = (values(out * inp, 1), values(rows * inp, 2));
            let p = PackedF32::pack(&w, out, inp).unwrap();
            for cols in [0..out, 16..out] {
                let n = cols.len();
                let (mut narrow, mut wide) = (vec![f32::NAN; rows * n], vec![0f32; rows * n]);
                p.matmul_cols_on(&x, rows, cols.clone(), &mut narrow, false);
                p.matmul_cols_on(&x, rows, cols.clone(), &mut wide, true);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&narrow), bits(&wide), "{rows}x{out}, outputs {cols:?}");
            }
        }
    }

    #[test]
    fn shapes_the_kernel_cannot_take_are_left_to_gemm() {
        let w = vec![0f32; 24 * 8];
        assert!(PackedF32::pack(&w, 24, 8).is_none());
        assert!(PackedF32::pack(&w[..10], 16, 8).is_none());
    }
}
