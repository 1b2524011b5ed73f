//! Element-wise pieces of the encoder, written so the compiler vectorises them: the exact
//! (erf) GELU with a rational erf, layer normalisation, and softmax.

/// Defines `pub(super) fn $name` that runs its body compiled for AVX-512 or AVX2 + FMA
/// when the CPU has them (checked once), and for baseline x86-64 or other targets
/// otherwise. The product must run on any x86-64 a customer owns, so the crate is not
/// built with `-C target-cpu`; without these variants `f32::mul_add` is a libm call and
/// loops over it do not vectorise.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn v4($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                match $crate::native::math::simd_level() {
                    // SAFETY: the CPU has the features these variants are compiled for
                    // (`simd_level` checked them).
                    #[allow(unsafe_code)]
                    $crate::native::math::SimdLevel::V4 => return unsafe { v4($($arg),*) },
                    #[allow(unsafe_code)]
                    $crate::native::math::SimdLevel::V3 => return unsafe { v3($($arg),*) },
                    $crate::native::math::SimdLevel::Base => {}
                }
            }
            generic($($arg),*)
        }
    };
}
pub(super) use multiversion;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SimdLevel {
    /// AVX-512 F/BW/DQ/VL with AVX2 and FMA.
    V4,
    /// AVX2 and FMA.
    V3,
    Base,
}

pub(super) fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let v4 = v3
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl");
            match (v4, v3) {
                (true, _) => SimdLevel::V4,
                (false, true) => SimdLevel::V3,
                _ => SimdLevel::Base,
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        SimdLevel::Base
    }
}

/// erf(x) to within ~1e-7 absolute: the rational approximation Eigen and XLA use for f32,
/// branch-free so a loop over it vectorises (libm's `erff` is scalar and was 9–11% of
/// the Candle path's profile).
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_600_6e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

/// e^x for x ≤ 0 (softmax after subtracting the maximum) to ~2 ulp, branch-free so a loop
/// over it vectorises: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial
/// (Cephes' `expf`), 2^n by building the exponent bits.
#[inline(always)]
pub(super) fn exp_neg(x: f32) -> f32 {
    // Below -87 e^x is near f32's smallest normal: such scores (masked ones are -inf)
    // weigh nothing, and the clamp keeps 2^n's exponent in range.
    let tiny = x < -87.0;
    let x = x.max(-87.0);
    // Round to nearest by adding and removing 1.5·2^23 (x·log2e is within ±126).
    const SHIFTER: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    // n as an integer straight from t's mantissa bits (t = 1.5·2^23 + n, one ulp = 1): a
    // float-to-int `as` cast saturates, which kept this loop from vectorising.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4b40_0000);
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let p = (p * r).mul_add(r, r) + 1.0;
    let e = p * f32::from_bits(((ni + 127) as u32) << 23);
    if tiny { 0.0 } else { e }
}

multiversion! {
    fn gelu_in_place(xs: &mut [f32]) {
        for x in xs {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// `y[r] += b` for every row of `y`.
    fn add_bias(y: &mut [f32], b: &[f32]) {
        for row in y.chunks_exact_mut(b.len()) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

multiversion! {
    /// `x = layer_norm(x + residual)` over one row.
    fn add_layer_norm(
        x: &mut [f32],
        residual: Option<&[f32]>,
        g: &[f32],
        b: &[f32],
        eps: f32,
    ) {
        if let Some(res) = residual {
            for (v, r) in x.iter_mut().zip(res) {
                *v += r;
            }
        }
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let mut sq = [0f32; 16];
        let (chunks, tail) = x.as_chunks::<16>();
        let tail: f32 = tail.iter().map(|v| (v - mean) * (v - mean)).sum();
        for c in chunks {
            for (sq, v) in sq.iter_mut().zip(c) {
                *sq = (v - mean).mul_add(v - mean, *sq);
            }
        }
        let var = (sum(&sq) + tail) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Σ x with 16 partial sums, so it vectorises (a single running sum is a serial chain).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (chunks, tail) = x.as_chunks::<16>();
    for c in chunks {
        for (acc, v) in acc.iter_mut().zip(c) {
            *acc += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

#[inline(always)]
pub(super) fn softmax_in_place(xs: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let (chunks, tail) = xs.as_chunks::<16>();
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = if *v > *m { *v } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for x in xs.iter_mut() {
        *x = exp_neg(*x - max);
    }
    let inv = 1.0 / sum(xs);
    for x in xs {
        *x *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_the_series_to_f32_precision() {
        // erf by its Taylor series in f64, accurate on [-3, 3].
        fn erf64(x: f64) -> f64 {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        for i in -300..=300 {
            let x = i as f64 / 100.0;
            let got = erf(x as f32) as f64;
            assert!(
                (got - erf64(x)).abs() < 5e-7,
                "erf({x}) = {got}, want {}",
                erf64(x)
            );
        }
        assert_eq!(erf(10.0), erf(4.0));
        assert!((erf(-8.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        add_layer_norm(&mut x, Some(&[1.0; 4]), &[1.0; 4], &[0.5; 4], 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        assert!((x[3] - x[0] - 2.0 * 1.5 / 1.118_034).abs() < 1e-4, "{x:?}");
    }

    #[test]
    fn exp_neg_matches_libm() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let (got, want) = (exp_neg(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want.max(f32::MIN_POSITIVE),
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert!(exp_neg(-87.0) < 1e-37);
    }

    #[test]
    fn bias_is_added_to_every_row() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 / 7.0 - 2.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.5 - i as f32 / 11.0).collect();
        let mut y = a.clone();
        add_bias(&mut y[..36], &b[..12]);
        assert_eq!(y[13], a[13] + b[1]);
        assert_eq!(y[36], a[36]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, f32::NEG_INFINITY];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}
