//! Linear layers on AVX-512-BF16 (`vdpbf16ps`): bf16 pairs, f32 accumulation, for CPUs
//! that have it without AMX (AMD Zen 4 and 5; Intel Cooper Lake).
//!
//! The microkernel keeps an `MR × NR` block of C (up to 6 rows × 48 outputs) in 18 of the
//! 32 vector registers (with 8 rows the int8 kernel of the same shape spilled); per input pair it loads NR weight registers and broadcasts one
//! input pair per row, so each load feeds 2–3 dot products. Columns are the outer loop so
//! a block of weights (48 outputs × in) stays in L1/L2 while every row passes over it.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::bf16::{BLOCK_N, PackedBf16};

const MR: usize = 6;
const NR: usize = 3;

/// True when this CPU has AVX-512F, BW and BF16.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    })
}

/// `dst[i] = bf16(src[i])` (round to nearest even). Call only after [`available`].
pub(super) fn convert(src: &[f32], dst: &mut [u16]) {
    assert!(available());
    let n = src.len().min(dst.len());
    // SAFETY: the CPU has the features (asserted above); the loop reads and writes whole
    // 32-value chunks inside the first `n` values of both slices.
    #[allow(unsafe_code)]
    unsafe {
        convert_avx512(&src[..n], &mut dst[..n]);
    }
    let done = n / 32 * 32;
    for (d, s) in dst[done..n].iter_mut().zip(&src[done..n]) {
        *d = super::bf16::bf16(*s);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn convert_avx512(src: &[f32], dst: &mut [u16]) {
    for (s, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(32)) {
        // SAFETY: both chunks hold exactly 32 values; unaligned loads and stores.
        #[allow(unsafe_code)]
        unsafe {
            let lo = _mm512_loadu_ps(s.as_ptr());
            let hi = _mm512_loadu_ps(s.as_ptr().add(16));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(d.as_mut_ptr().cast(), packed);
        }
    }
}

/// `c[rows, out] = a[rows, in] · wᵀ`, `a` bf16 row-major, `c` f32 row-major.
/// Call only after [`available`].
pub(super) fn matmul(w: &PackedBf16, a: &[u16], rows: usize, c: &mut [f32]) {
    assert!(available());
    assert!(a.len() >= rows * w.inp && c.len() >= rows * w.out);
    assert!(w.out.is_multiple_of(BLOCK_N) && w.inp.is_multiple_of(2));
    assert!(w.data.len() == w.out * w.inp);
    let blocks = w.out / BLOCK_N;
    for nb in (0..blocks).step_by(NR) {
        let nr = NR.min(blocks - nb);
        for r in (0..rows).step_by(MR) {
            let mr = MR.min(rows - r);
            let args = Args {
                a: a[r * w.inp..].as_ptr(),
                lda: w.inp,
                b: w.data[w.block(nb)..].as_ptr(),
                pairs: w.inp / 2,
                c: c[r * w.out + nb * BLOCK_N..].as_mut_ptr(),
                ldc: w.out,
            };
            // SAFETY: rows r..r+mr of `a` and `c`, and blocks nb..nb+nr of the weights, lie
            // inside the slices (asserted above: `a` holds rows × in values, `c` rows × out,
            // and each block 16 × in); the CPU has the features (asserted above).
            #[allow(unsafe_code)]
            unsafe {
                dispatch(mr, nr, &args);
            }
        }
    }
}

struct Args {
    a: *const u16,
    lda: usize,
    b: *const u16,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
}

/// # Safety
/// `args` must describe `mr` rows and `nr` blocks inside live buffers, and the CPU must
/// have AVX-512F, BW and BF16.
#[allow(unsafe_code)]
unsafe fn dispatch(mr: usize, nr: usize, args: &Args) {
    // SAFETY: forwarded from the caller.
    unsafe { super::dispatch_kernel!(kernel, mr, nr, args) }
}

/// One `R × (16·N)` block of C over the whole of k.
///
/// # Safety
/// As [`dispatch`], with `R` rows and `N` blocks.
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn kernel<const R: usize, const N: usize>(args: &Args) {
    let bstride = BLOCK_N * 2 * args.pairs;
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    // SAFETY: every pointer below stays inside the rows and blocks the caller vouched for:
    // row i's pair p is at a + i·lda + 2p (< lda), block j's pair-row p at
    // b + j·bstride + 32p (< bstride), and C's row i, block j at c + i·ldc + 16j.
    unsafe {
        for p in 0..args.pairs {
            let mut b = [_mm512_setzero_si512(); N];
            for (j, b) in b.iter_mut().enumerate() {
                *b = _mm512_loadu_si512(args.b.add(j * bstride + p * 2 * BLOCK_N).cast());
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let pair = args
                    .a
                    .add(i * args.lda + 2 * p)
                    .cast::<i32>()
                    .read_unaligned();
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for (acc, b) in row.iter_mut().zip(&b) {
                    *acc = _mm512_dpbf16_ps(*acc, a, std::mem::transmute::<__m512i, __m512bh>(*b));
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                _mm512_storeu_ps(args.c.add(i * args.ldc + j * BLOCK_N), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::bf16::bf16;

    #[test]
    fn avx512_bf16_matmul_matches_f32() {
        if !available() {
            eprintln!("SKIPPED avx512_bf16_matmul_matches_f32: this CPU has no AVX-512-BF16");
            return;
        }
        // 13 rows: two 6-row blocks and a 1-row tail. 8 and 10 blocks of 16 outputs:
        // 3 + 3 + 2 and 3 + 3 + 3 + 1.
        for out in [128, 160] {
            let (rows, inp) = (13, 96);
            let (w, x) = crate::native::test_operands(rows, out, inp);
            let packed = PackedBf16::pack(&w, out, inp).unwrap();
            let a: Vec<u16> = x.iter().map(|&v| bf16(v)).collect();
            let mut c = vec![f32::NAN; rows * out];
            matmul(&packed, &a, rows, &mut c);
            for r in 0..rows {
                for o in 0..out {
                    let want: f32 = (0..inp).map(|k| x[r * inp + k] * w[o * inp + k]).sum();
                    // Inputs are exact in bf16 (few mantissa bits): only summation order
                    // differs.
                    let got = c[r * out + o];
                    assert!((got - want).abs() < 1e-3, "{out}: {r},{o}: {got} vs {want}");
                }
            }
        }
    }
}
