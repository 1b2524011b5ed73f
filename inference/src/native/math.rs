//! Element-wise pieces of the encoder, written so the compiler vectorises them: the exact
//! (erf) GELU with a rational erf, layer normalisation, and softmax.

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

pub(super) fn gelu_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `x = layer_norm(x + residual)` over one row.
pub(super) fn add_layer_norm(
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
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(g).zip(b) {
        *v = (*v - mean) * inv * g + b;
    }
}

pub(super) fn softmax_in_place(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
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
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, f32::NEG_INFINITY];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}
