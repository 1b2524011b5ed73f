//! bf16 weights packed once for the dot-product kernels (AMX tiles and AVX-512-BF16), and
//! the conversion of activations to bf16.
//!
//! Both kernels multiply pairs of bf16 along k and accumulate in f32, so they share one
//! layout: for each block of 16 outputs, the input pairs in order, each pair holding the 16
//! outputs' two bf16 values side by side (the "VNNI" layout). An AMX B tile is 16 such
//! pair-rows; an AVX-512 register is one.

/// Outputs per block: one AVX-512 register of f32, one AMX C tile's width.
pub(super) const BLOCK_N: usize = 16;
/// Inputs per AMX tile row (bf16 values along k).
pub(super) const BLOCK_K: usize = 32;

/// Round to nearest even, as the hardware's own conversion does.
pub(super) fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits.wrapping_add(0x7fff + ((bits >> 16) & 1))) >> 16) as u16
}

/// `dst[i] = bf16(src[i])`, vectorised where the CPU has AVX-512-BF16.
pub(super) fn convert(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        super::avx512::convert(src, dst);
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16(*s);
    }
}

/// A weight matrix `[out, in]` in the shared bf16 layout. Block `nb` (outputs
/// `16·nb .. 16·nb + 16`) is contiguous: `in / 2` pair-rows of 32 values each.
pub(super) struct PackedBf16 {
    pub(super) data: Vec<u16>,
    pub(super) out: usize,
    pub(super) inp: usize,
}

impl PackedBf16 {
    /// `None` when the shape does not fit whole AMX tiles (the caller keeps f32).
    pub(super) fn pack(w: &[f32], out: usize, inp: usize) -> Option<Self> {
        if !out.is_multiple_of(2 * BLOCK_N) || !inp.is_multiple_of(BLOCK_K) || w.len() != out * inp
        {
            return None;
        }
        let mut data = vec![0u16; out * inp];
        for nb in 0..out / BLOCK_N {
            let block = &mut data[nb * BLOCK_N * inp..][..BLOCK_N * inp];
            for p in 0..inp / 2 {
                for n in 0..BLOCK_N {
                    for j in 0..2 {
                        block[p * 2 * BLOCK_N + n * 2 + j] =
                            bf16(w[(nb * BLOCK_N + n) * inp + p * 2 + j]);
                    }
                }
            }
        }
        Some(Self { data, out, inp })
    }

    /// Where block `nb` starts in `data`.
    pub(super) fn block(&self, nb: usize) -> usize {
        nb * BLOCK_N * self.inp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16(-2.0), 0xc000);
    }

    #[test]
    fn convert_matches_the_scalar_rounding() {
        let src: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 37.0)
            .collect();
        let mut dst = vec![0u16; src.len()];
        convert(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            assert_eq!(*d, bf16(*s), "{s}");
        }
    }
}
