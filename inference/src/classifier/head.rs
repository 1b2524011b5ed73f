//! The head itself: a linear (multinomial logistic) layer or a one-hidden-layer MLP over
//! the encoder's sentence vectors, trained with candle-nn's AdamW.

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::ClassifierError;
use super::few;
use super::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// Multinomial logistic regression: fast, convex, a strong floor.
    Linear,
    /// One hidden ReLU layer with dropout.
    #[default]
    Mlp,
}

impl std::str::FromStr for HeadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linear" => Ok(Self::Linear),
            "mlp" => Ok(Self::Mlp),
            _ => Err(format!("unknown head {s:?}: expected linear or mlp")),
        }
    }
}

/// A layer's weights (`out × in`, row-major) and bias as plain values.
type PlainLayer = (Vec<f32>, Vec<f32>);

/// The weights, on the CPU (a head is small: the encoder is what wants the GPU).
#[derive(Debug, Clone)]
pub(crate) struct Head {
    layers: Vec<(Tensor, Tensor)>,
    /// The layers' values for [`Head::logits_few`], read on first use (a head's tensors
    /// never change once it is made; training makes new heads).
    plain: OnceLock<Option<Vec<PlainLayer>>>,
}

impl Head {
    pub(crate) fn new(layers: Vec<(Tensor, Tensor)>) -> Self {
        Self {
            layers,
            plain: OnceLock::new(),
        }
    }

    /// [`Head::logits`] of a few rows in plain loops (see [`few`]); `None` when the
    /// weights or the rows do not fit, for the caller to take Candle's path.
    pub(crate) fn logits_few(&self, x: &[Vec<f32>]) -> Option<Vec<Vec<f32>>> {
        let layers = self
            .plain
            .get_or_init(|| {
                self.layers
                    .iter()
                    .map(|(w, b)| Some((few::values(w)?, few::values(b)?)))
                    .collect()
            })
            .as_ref()?;
        let last = layers.len().saturating_sub(1);
        let mut h = x.to_vec();
        for (i, (w, b)) in layers.iter().enumerate() {
            h = few::affine(&h, w, Some(b))?;
            if i < last {
                h.iter_mut().flatten().for_each(|v| *v = v.max(0.0));
            }
        }
        Some(h)
    }

    pub(crate) fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    pub(crate) fn to_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.insert(format!("layer{i}.weight"), w.clone());
            out.insert(format!("layer{i}.bias"), b.clone());
        }
        out
    }

    pub(crate) fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        layers: usize,
    ) -> Result<Self, String> {
        let mut out = Vec::with_capacity(layers);
        for i in 0..layers {
            let get = |name: String| {
                tensors
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| format!("tensor {name} is missing"))
            };
            out.push((
                get(format!("layer{i}.weight"))?,
                get(format!("layer{i}.bias"))?,
            ));
        }
        Ok(Self::new(out))
    }

    pub(crate) fn input_dim(&self) -> Option<usize> {
        self.layers
            .first()
            .and_then(|(w, _)| w.dims().get(1).copied())
    }

    pub(crate) fn classes(&self) -> Option<usize> {
        self.layers
            .last()
            .and_then(|(w, _)| w.dims().first().copied())
    }
}

#[derive(Debug, Clone)]
pub struct HeadOptions {
    pub kind: HeadKind,
    pub hidden: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub dropout: f32,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            kind: HeadKind::Mlp,
            hidden: 512,
            epochs: 40,
            batch_size: 32,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            dropout: 0.2,
        }
    }
}

/// One epoch's figures, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f32,
    /// Closed-set accuracy on the held-out split (`None` without one).
    pub val_accuracy: Option<f32>,
    /// The second pass, on every example, after calibration.
    pub refit: bool,
}

fn uniform(rng: &mut Rng, rows: usize, cols: usize) -> candle_core::Result<Tensor> {
    // Glorot/Xavier uniform.
    let limit = (6.0 / (rows + cols) as f32).sqrt();
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| (rng.next_f32() * 2.0 - 1.0) * limit)
        .collect();
    Tensor::from_vec(data, (rows, cols), &Device::Cpu)
}

pub(crate) fn matrix(rows: &[&[f32]]) -> candle_core::Result<Tensor> {
    let dim = rows.first().map(|r| r.len()).unwrap_or(0);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu)
}

pub(crate) fn accuracy(head: &Head, x: &Tensor, y: &[u32]) -> candle_core::Result<f32> {
    if y.is_empty() {
        return Ok(0.0);
    }
    let pred = head.logits(x)?.argmax(1)?.to_vec1::<u32>()?;
    let right = pred.iter().zip(y).filter(|(p, t)| p == t).count();
    Ok(right as f32 / y.len() as f32)
}

/// Trains a head on `x` (N × dim, L2-normalised sentence vectors) and labels `y`. The
/// weights of the epoch with the best held-out accuracy are kept (the last epoch's when
/// there is no held-out split). Deterministic for a given `seed`.
pub(crate) fn train(
    x: &Tensor,
    y: &[u32],
    classes: usize,
    val: Option<(&Tensor, &[u32])>,
    opts: &HeadOptions,
    seed: u64,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<Head, ClassifierError> {
    let (n, dim) = x.dims2()?;
    if n == 0 || classes < 2 {
        return Err(ClassifierError::Data(
            "need examples of at least two labels".into(),
        ));
    }
    let mut rng = Rng::new(seed);
    let shapes = match opts.kind {
        HeadKind::Linear => vec![(classes, dim)],
        HeadKind::Mlp => vec![(opts.hidden.max(1), dim), (classes, opts.hidden.max(1))],
    };
    let mut vars = Vec::new();
    for (rows, cols) in &shapes {
        vars.push(Var::from_tensor(&uniform(&mut rng, *rows, *cols)?)?);
        vars.push(Var::zeros(*rows, DType::F32, &Device::Cpu)?);
    }
    let snapshot = |vars: &[Var]| -> candle_core::Result<Head> {
        let layers = vars
            .chunks(2)
            .map(|p| Ok((p[0].as_tensor().copy()?, p[1].as_tensor().copy()?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Head::new(layers))
    };
    // Shares the variables' storage, which the optimiser updates in place: only Candle's
    // path may read it (`logits_few` would keep the values of its first call).
    let live = |vars: &[Var]| {
        Head::new(
            vars.chunks(2)
                .map(|p| (p[0].as_tensor().clone(), p[1].as_tensor().clone()))
                .collect(),
        )
    };
    let params = candle_nn::ParamsAdamW {
        lr: opts.learning_rate,
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars.clone(), params)?;
    let mut order: Vec<usize> = (0..n).collect();
    let batch = opts.batch_size.max(1);
    let steps_per_epoch = n.div_ceil(batch);
    let total_steps = (steps_per_epoch * opts.epochs.max(1)) as f64;
    let mut step = 0usize;
    let mut best: Option<(f32, Head)> = None;
    for epoch in 1..=opts.epochs.max(1) {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f32;
        for chunk in order.chunks(batch) {
            // Linear decay to a tenth of the rate: late steps settle instead of bouncing.
            let frac = step as f64 / total_steps;
            opt.set_learning_rate(opts.learning_rate * (1.0 - 0.9 * frac));
            step += 1;
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
                chunk.len(),
                &Device::Cpu,
            )?;
            let xb = x.index_select(&idx, 0)?;
            let yb = Tensor::from_vec(
                chunk.iter().map(|&i| y[i]).collect::<Vec<u32>>(),
                chunk.len(),
                &Device::Cpu,
            )?;
            let mut h = xb;
            for (i, p) in vars.chunks(2).enumerate() {
                h = h
                    .matmul(&p[0].as_tensor().t()?)?
                    .broadcast_add(p[1].as_tensor())?;
                if i + 1 < shapes.len() {
                    h = h.relu()?;
                    if opts.dropout > 0.0 {
                        let (r, c) = h.dims2()?;
                        let mask = rng.dropout_mask(r * c, opts.dropout);
                        h = (h * Tensor::from_vec(mask, (r, c), &Device::Cpu)?)?;
                    }
                }
            }
            let loss = candle_nn::loss::cross_entropy(&h, &yb)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? * chunk.len() as f32;
        }
        let val_accuracy = match val {
            Some((vx, vy)) if !vy.is_empty() => Some(accuracy(&live(&vars), vx, vy)?),
            _ => None,
        };
        progress(&EpochReport {
            epoch,
            epochs: opts.epochs.max(1),
            loss: loss_sum / n as f32,
            val_accuracy,
            refit: false,
        });
        let score = val_accuracy.unwrap_or(epoch as f32);
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, snapshot(&vars)?));
        }
    }
    match best {
        Some((_, head)) => Ok(head),
        None => Ok(snapshot(&vars)?),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Three well-separated clusters on the unit sphere.
    pub(crate) fn clusters(per_class: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for c in 0..3u32 {
            for _ in 0..per_class {
                let mut v = [0f32; 8];
                v[c as usize] = 1.0;
                for x in v.iter_mut() {
                    *x += (rng.next_f32() - 0.5) * 0.4;
                }
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                xs.push(v.iter().map(|a| a / norm).collect());
                ys.push(c);
            }
        }
        (xs, ys)
    }

    #[test]
    fn learns_separable_clusters_and_is_deterministic() {
        let (xs, ys) = clusters(30, 1);
        let rows: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
        let x = matrix(&rows).unwrap();
        for kind in [HeadKind::Linear, HeadKind::Mlp] {
            let opts = HeadOptions {
                kind,
                hidden: 16,
                epochs: 30,
                batch_size: 8,
                learning_rate: 1e-2,
                ..Default::default()
            };
            let mut losses = Vec::new();
            let a = train(&x, &ys, 3, None, &opts, 42, &mut |r| losses.push(r.loss)).unwrap();
            assert!(losses.last().unwrap() < &(losses[0] * 0.5), "{losses:?}");
            assert!(accuracy(&a, &x, &ys).unwrap() > 0.95);
            let b = train(&x, &ys, 3, None, &opts, 42, &mut |_| {}).unwrap();
            let c = train(&x, &ys, 3, None, &opts, 43, &mut |_| {}).unwrap();
            let flat = |h: &Head| -> Vec<f32> {
                h.layers
                    .iter()
                    .flat_map(|(w, _)| w.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .collect()
            };
            assert_eq!(flat(&a), flat(&b), "same seed, same weights");
            assert_ne!(flat(&a), flat(&c), "another seed, other weights");
        }
    }

    #[test]
    fn tensors_round_trip() {
        let (xs, ys) = clusters(5, 2);
        let rows: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
        let x = matrix(&rows).unwrap();
        let opts = HeadOptions {
            hidden: 4,
            epochs: 2,
            ..Default::default()
        };
        let h = train(&x, &ys, 3, None, &opts, 1, &mut |_| {}).unwrap();
        let back = Head::from_tensors(&h.to_tensors(), 2).unwrap();
        assert_eq!(back.input_dim(), Some(8));
        assert_eq!(back.classes(), Some(3));
        assert!(Head::from_tensors(&h.to_tensors(), 3).is_err());
    }
}
