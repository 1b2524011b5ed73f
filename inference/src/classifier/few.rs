//! Classifying a few vectors at a time (a bot answer classifies one) in plain loops
//! instead of Candle's matmul. For one row, Candle's CPU matmul packs the whole weight
//! matrix before multiplying and reads /proc/cpuinfo to size its thread pool on every
//! call; together that cost ~0.3 ms of a bot answer, against ~0.03 ms for the arithmetic
//! (benches/README.md, "The intent head without Candle's matmul"). Training and
//! evaluation, which classify thousands of rows at once, keep Candle's matmul.

use std::sync::OnceLock;

use candle_core::{DType, Tensor};

/// Batches of up to this many rows take the plain path.
pub(crate) const MAX_ROWS: usize = 8;

/// A tensor's values as f32, row-major; `None` when it cannot be read so (the caller then
/// falls back to Candle, which reports the problem).
pub(crate) fn values(t: &Tensor) -> Option<Vec<f32>> {
    t.flatten_all()
        .and_then(|f| f.to_dtype(DType::F32))
        .and_then(|f| f.to_vec1::<f32>())
        .ok()
}

/// A matrix for both paths: the tensor, and its values read the first time the plain
/// path needs them. Immutable, so the two never disagree. The values are a second copy
/// (~15 MB for the nearest-neighbour memory of a head trained on 10,000 utterances).
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    tensor: Tensor,
    plain: OnceLock<Option<Vec<f32>>>,
}

impl Matrix {
    pub(crate) fn new(tensor: Tensor) -> Self {
        Self {
            tensor,
            plain: OnceLock::new(),
        }
    }

    pub(crate) fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    pub(crate) fn plain(&self) -> Option<&[f32]> {
        self.plain.get_or_init(|| values(&self.tensor)).as_deref()
    }
}

/// A dot product in eight lanes, so that the compiler vectorises it without reordering
/// a single running sum.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `x · wᵀ + b` for each row of `x`, `w` being `out × in` row-major; `None` when the
/// shapes disagree.
pub(crate) fn affine(x: &[Vec<f32>], w: &[f32], b: Option<&[f32]>) -> Option<Vec<Vec<f32>>> {
    let cols = x.first()?.len();
    if cols == 0 || !w.len().is_multiple_of(cols) || x.iter().any(|r| r.len() != cols) {
        return None;
    }
    let out = w.len() / cols;
    if b.is_some_and(|b| b.len() != out) {
        return None;
    }
    Some(
        x.iter()
            .map(|r| {
                w.chunks_exact(cols)
                    .enumerate()
                    .map(|(i, row)| dot(row, r) + b.map_or(0.0, |b| b[i]))
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    #[test]
    fn dot_matches_a_plain_sum_at_every_length() {
        for n in [0, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn affine_matches_candle_and_refuses_bad_shapes() {
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let x = vec![vec![1.0, -2.0, 0.5], vec![0.0, 3.0, -1.0]];
        let got = affine(&x, &w, Some(&[0.1, 0.2, 0.3, 0.4])).unwrap();
        let t = Tensor::from_vec(w.clone(), (4, 3), &Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.concat(), (2, 3), &Device::Cpu).unwrap();
        let bt = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4], &Device::Cpu).unwrap();
        let want = xt
            .matmul(&t.t().unwrap())
            .unwrap()
            .broadcast_add(&bt)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        assert!(affine(&[vec![1.0; 5]], &w, None).is_none());
        assert!(affine(&x, &w, Some(&[0.0; 3])).is_none());
        assert!(affine(&[vec![1.0, 2.0, 3.0], vec![1.0]], &w, None).is_none());
    }

    #[test]
    fn a_matrix_reads_its_tensor_once() {
        let t = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
        let m = Matrix::new(t);
        assert_eq!(m.plain().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.tensor().dims(), &[2, 2]);
        let bf = Tensor::new(&[1.5f32, -2.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        assert_eq!(values(&bf).unwrap(), vec![1.5, -2.0]);
    }
}
