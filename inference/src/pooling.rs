//! Pooling over the attention mask, then optional L2 normalisation.

use candle_core::{D, DType, Tensor};

use crate::manifest::Pooling;

/// `hidden`: [batch, seq, dim]; `mask`: [batch, seq] of 0/1 in the hidden dtype.
pub(crate) fn pool(
    hidden: &Tensor,
    mask: &Tensor,
    pooling: Pooling,
) -> candle_core::Result<Tensor> {
    match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => {
            let mask = mask.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            // Clamp as sentence-transformers does, so an all-masked row cannot divide by zero.
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)
        }
    }
}

pub(crate) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_pooling_ignores_masked_positions() {
        let dev = Device::Cpu;
        let hidden = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., 100.]]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 0.]], &dev).unwrap();
        let pooled = pool(&hidden, &mask, Pooling::Mean).unwrap();
        assert_eq!(pooled.to_vec2::<f32>().unwrap(), vec![vec![2., 3.]]);
        let cls = pool(&hidden, &mask, Pooling::Cls).unwrap();
        assert_eq!(cls.to_vec2::<f32>().unwrap(), vec![vec![1., 2.]]);
    }

    #[test]
    fn normalises_to_unit_length() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[3f32, 4.]], &dev).unwrap();
        assert_eq!(
            l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![0.6, 0.8]]
        );
    }
}
