//! `--fine-tune`: the encoder's top layers trained for one classification task, so that
//! its sentence vectors separate the operator's labels better than the frozen encoder's.
//!
//! Only the top `layers` transformer layers learn. The layers below are run once, by the
//! native encoder, and their output is kept in memory; each epoch then runs (forwards and
//! backwards) the top layers alone. On 2 cores that is what makes several epochs over
//! BANKING77 fit the training budget: a full fine-tune costs all six layers every epoch.
//! The result is a complete model directory (the base model's files with the tuned
//! layers' weights and a manifest of its own), served beside the knowledge-base encoder
//! for this classifier only; the heads are then trained on its vectors as on any encoder's.
//!
//! The layers are written with Candle's differentiable operations (its fused layer norm
//! and last-dimension softmax have no gradient), and must give what the native encoder
//! gives for the same weights: a test checks it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::Optimizer;

use super::ClassifierError;
use super::rng::Rng;
use crate::model::EmbeddingModel;
use crate::{Encoded, InputKind, Manifest, ModelInfo, Pooling, sha256_file};

type Result<T> = std::result::Result<T, ClassifierError>;

/// The parameters of one layer, as the checkpoint names them below `encoder.layer.N.`
/// (layer norms are looked up as `weight`/`bias` or, in old checkpoints, `gamma`/`beta`).
const PARAMS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// Sentence vectors are unit length; logits are this times the cosine with each class's
/// weight row (plus a bias), so that a softmax over cosines can still be confident.
const SCALE: f64 = 20.0;

#[derive(Debug, Clone)]
pub struct FineTuneOptions {
    /// How many of the encoder's top layers learn (the rest stay frozen).
    pub layers: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// The encoder layers' peak rate (after a short warm-up, decaying linearly).
    pub learning_rate: f64,
    /// The task layer's rate (it starts from the class centroids, so it moves faster).
    pub head_learning_rate: f64,
    pub weight_decay: f64,
    pub dropout: f32,
    /// Same data and seed, same weights.
    pub seed: u64,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        Self {
            layers: 2,
            epochs: 4,
            batch_size: 32,
            learning_rate: 1e-4,
            head_learning_rate: 2e-3,
            weight_decay: 0.01,
            dropout: 0.1,
            seed: 42,
        }
    }
}

/// Where training is, for a progress bar: called after every batch.
#[derive(Debug, Clone, Copy)]
pub struct FineTuneProgress {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps: usize,
    /// Mean loss of the epoch so far.
    pub loss: f32,
    /// Share of the epoch's examples so far that the task layer classified right.
    pub accuracy: f32,
    /// The task layer's accuracy on the validation examples, after an epoch's last batch.
    pub val_accuracy: Option<f32>,
}

/// Labelled examples of a [`Cached`] set: their indices in it and their classes.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    pub examples: &'a [usize],
    pub y: &'a [u32],
}

/// One tuned layer's weights, in [`PARAMS`] order.
struct LayerVars(Vec<Var>);

impl LayerVars {
    fn p(&self, i: usize) -> &Tensor {
        self.0[i].as_tensor()
    }
}

/// The trainable top of an encoder, over hidden states cached from the frozen layers.
pub struct TunedLayers {
    first: usize,
    hidden: usize,
    heads: usize,
    eps: f64,
    pooling: Pooling,
    normalize: bool,
    layers: Vec<LayerVars>,
    /// Checkpoint names of the tuned tensors, in `layers` order.
    names: Vec<Vec<String>>,
}

/// Utterances run through the frozen layers: each one's `[len, hidden]` hidden states.
pub struct Cached {
    states: Vec<Vec<f32>>,
    lens: Vec<usize>,
}

impl Cached {
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The memory the cached states take.
    pub fn bytes(&self) -> u64 {
        let floats: usize = self.states.iter().map(Vec::len).sum();
        (floats * std::mem::size_of::<f32>()) as u64
    }
}

/// The base model's tensors by checkpoint name, and the prefix its encoder's names carry
/// ("bert.", "roberta." or none).
fn checkpoint(model: &EmbeddingModel) -> Result<(HashMap<String, Tensor>, String)> {
    let dir = model.dir();
    let manifest = model.manifest();
    let tensors: HashMap<String, Tensor> = if manifest.lists("model.safetensors") {
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?
    } else if manifest.lists("pytorch_model.bin") {
        candle_core::pickle::read_all(dir.join("pytorch_model.bin"))?
            .into_iter()
            .collect()
    } else {
        return Err(ClassifierError::artefact(
            dir,
            "the model lists neither model.safetensors nor pytorch_model.bin",
        ));
    };
    let prefix = ["", "bert.", "roberta."]
        .into_iter()
        .find(|p| tensors.contains_key(&format!("{p}encoder.layer.0.attention.self.query.weight")))
        .ok_or_else(|| ClassifierError::artefact(dir, "no encoder.layer.0 weights found"))?;
    Ok((tensors, prefix.to_string()))
}

fn layer_name(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    layer: usize,
    param: &str,
) -> Option<String> {
    let name = format!("{prefix}encoder.layer.{layer}.{param}");
    if tensors.contains_key(&name) {
        return Some(name);
    }
    let old = name
        .strip_suffix("LayerNorm.weight")
        .map(|s| format!("{s}LayerNorm.gamma"))
        .or_else(|| {
            name.strip_suffix("LayerNorm.bias")
                .map(|s| format!("{s}LayerNorm.beta"))
        })?;
    tensors.contains_key(&old).then_some(old)
}

impl TunedLayers {
    /// The top `layers` layers of `model`, initialised with its weights.
    pub fn new(model: &EmbeddingModel, layers: usize) -> Result<Self> {
        let shape = model.native_shape().ok_or_else(|| {
            ClassifierError::Data(
                "fine-tuning runs on the CPU's native encoder: load the model on cpu with dtype f32"
                    .into(),
            )
        })?;
        if layers == 0 || layers > shape.layers {
            return Err(ClassifierError::InvalidInput {
                field: "fine_tune_layers".into(),
                message: format!(
                    "must be between 1 and the encoder's {} layers",
                    shape.layers
                ),
            });
        }
        let (tensors, prefix) = checkpoint(model)?;
        let first = shape.layers - layers;
        let mut vars = Vec::with_capacity(layers);
        let mut names = Vec::with_capacity(layers);
        for l in first..shape.layers {
            let mut lv = Vec::with_capacity(PARAMS.len());
            let mut ln = Vec::with_capacity(PARAMS.len());
            for param in PARAMS {
                let name = layer_name(&tensors, &prefix, l, param).ok_or_else(|| {
                    ClassifierError::artefact(
                        model.dir(),
                        format!("tensor {prefix}encoder.layer.{l}.{param} is missing"),
                    )
                })?;
                let t = tensors[&name].to_dtype(DType::F32)?;
                lv.push(Var::from_tensor(&t)?);
                ln.push(name);
            }
            vars.push(LayerVars(lv));
            names.push(ln);
        }
        Ok(Self {
            first,
            hidden: shape.hidden,
            heads: shape.heads,
            eps: f64::from(shape.eps),
            pooling: model.pooling(),
            normalize: model.normalizes(),
            layers: vars,
            names,
        })
    }

    fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| l.0.iter().cloned())
            .collect()
    }

    /// What [`cache`](Self::cache) of `texts` will take in memory, from their token
    /// counts alone: checked before the frozen layers run, so that training too large a
    /// set is refused at once instead of exhausting the machine's memory minutes later.
    pub fn cache_bytes(&self, model: &EmbeddingModel, texts: &[String]) -> Result<u64> {
        let mut tokens = 0u64;
        for t in texts {
            let e = model
                .tokenize(t, InputKind::Query)
                .map_err(|e| ClassifierError::Data(e.to_string()))?;
            tokens += e.len() as u64;
        }
        Ok(tokens * (self.hidden * std::mem::size_of::<f32>()) as u64)
    }

    /// Runs `texts` (as queries) through the frozen layers.
    pub fn cache(
        &self,
        model: &EmbeddingModel,
        texts: &[String],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Cached> {
        let mut states = Vec::with_capacity(texts.len());
        let mut lens = Vec::with_capacity(texts.len());
        let h = self.hidden;
        for chunk in texts.chunks(64) {
            let encoded = chunk
                .iter()
                .map(|t| model.tokenize(t, InputKind::Query))
                .collect::<crate::Result<Vec<Encoded>>>()
                .map_err(|e| ClassifierError::Data(e.to_string()))?;
            let refs: Vec<&Encoded> = encoded.iter().collect();
            let packed = model
                .hidden_after(&refs, self.first)
                .map_err(|e| ClassifierError::Data(e.to_string()))?;
            let mut row = 0;
            for e in &encoded {
                states.push(packed[row * h..(row + e.len()) * h].to_vec());
                lens.push(e.len());
                row += e.len();
            }
            progress(chunk.len());
        }
        Ok(Cached { states, lens })
    }

    /// A padded batch of cached examples: states `[b, t, h]`, the mask `[b, t]` and the
    /// attention bias `[b, 1, 1, t]` (0 for tokens, very negative for padding).
    fn batch(&self, cached: &Cached, idx: &[usize]) -> Result<(Tensor, Tensor, Tensor)> {
        let h = self.hidden;
        let t = idx
            .iter()
            .map(|&i| cached.lens[i])
            .max()
            .unwrap_or(1)
            .max(1);
        let b = idx.len();
        let mut x = vec![0f32; b * t * h];
        let mut mask = vec![0f32; b * t];
        for (r, &i) in idx.iter().enumerate() {
            let len = cached.lens[i];
            x[r * t * h..(r * t + len) * h].copy_from_slice(&cached.states[i]);
            mask[r * t..r * t + len].iter_mut().for_each(|m| *m = 1.0);
        }
        let x = Tensor::from_vec(x, (b, t, h), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu)?;
        let bias = ((mask.ones_like()? - &mask)? * -1e9)?.reshape((b, 1, 1, t))?;
        Ok((x, mask, bias))
    }

    /// Sentence vectors `[b, h]` for a batch; `dropout` only while training.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        bias: &Tensor,
        mut dropout: Option<(&mut Rng, f32)>,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let nh = self.heads;
        let dh = h / nh;
        let mut x = x.reshape((b * t, h))?;
        for l in &self.layers {
            let lin = |x: &Tensor, w: usize| -> candle_core::Result<Tensor> {
                x.matmul(&l.p(w).t()?)?.broadcast_add(l.p(w + 1))
            };
            let heads = |x: Tensor| -> candle_core::Result<Tensor> {
                x.reshape((b, t, nh, dh))?.transpose(1, 2)?.contiguous()
            };
            let q = heads(lin(&x, 0)?)?;
            let k = heads(lin(&x, 2)?)?;
            let v = heads(lin(&x, 4)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (dh as f64).sqrt()))?
                .broadcast_add(bias)?;
            let max = scores.max_keepdim(D::Minus1)?.detach();
            let e = scores.broadcast_sub(&max)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let ctx = p
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, h))?;
            let a = apply_dropout(lin(&ctx, 6)?, dropout.as_mut())?;
            let mid = layer_norm(&(a + &x)?, l.p(8), l.p(9), self.eps)?;
            let inter = lin(&mid, 10)?.gelu_erf()?;
            let o = apply_dropout(lin(&inter, 12)?, dropout.as_mut())?;
            x = layer_norm(&(o + &mid)?, l.p(14), l.p(15), self.eps)?;
        }
        let x = x.reshape((b, t, h))?;
        let pooled = match self.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.unsqueeze(2)?;
                let sum = x.broadcast_mul(&m)?.sum(1)?;
                sum.broadcast_div(&mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?)?
            }
        };
        if self.normalize {
            let norm = (pooled.sqr()?.sum_keepdim(1)? + 1e-24)?.sqrt()?;
            Ok(pooled.broadcast_div(&norm)?)
        } else {
            Ok(pooled)
        }
    }

    /// Sentence vectors of cached examples with the layers as they are now.
    pub fn vectors(&self, cached: &Cached) -> Result<Vec<Vec<f32>>> {
        let all: Vec<usize> = (0..cached.len()).collect();
        self.vectors_of(cached, &all)
    }

    /// Sentence vectors of the cached examples `idx`, in that order.
    fn vectors_of(&self, cached: &Cached, idx: &[usize]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..idx.len()).collect();
        // Similar lengths together: less padding.
        order.sort_by_key(|&k| cached.lens[idx[k]]);
        let mut out = vec![Vec::new(); idx.len()];
        for chunk in order.chunks(64) {
            let rows: Vec<usize> = chunk.iter().map(|&k| idx[k]).collect();
            let (x, mask, bias) = self.batch(cached, &rows)?;
            let v = self.forward(&x, &mask, &bias, None)?.to_vec2::<f32>()?;
            for (&k, v) in chunk.iter().zip(v) {
                out[k] = v;
            }
        }
        Ok(out)
    }

    /// Trains the layers (and a task layer over their vectors, dropped afterwards) on
    /// `train` examples of `cached` with classes in `0..classes`, reporting the task
    /// layer's accuracy on `val` after each epoch. Deterministic for a seed (`opts.seed`).
    pub fn train(
        &mut self,
        cached: &Cached,
        train: Labelled,
        val: Option<Labelled>,
        classes: usize,
        opts: &FineTuneOptions,
        progress: &mut dyn FnMut(&FineTuneProgress),
    ) -> Result<()> {
        let (examples, y) = (train.examples, train.y);
        let sizes_match = |l: &Labelled| l.examples.len() == l.y.len();
        let in_range = |l: &Labelled| {
            l.y.iter().all(|&c| (c as usize) < classes)
                && l.examples.iter().all(|&i| i < cached.len())
        };
        let labelled = [Some(train), val].into_iter().flatten();
        if examples.is_empty()
            || classes < 2
            || labelled.clone().any(|l| !sizes_match(&l) || !in_range(&l))
        {
            return Err(ClassifierError::Data(
                "fine-tuning needs labelled examples of at least two labels".into(),
            ));
        }
        let mut rng = Rng::new(opts.seed ^ 0x0F1E_7E57);
        // The task layer starts at the classes' centroids: from the first step its
        // gradient tells the encoder which way to move, not random noise.
        let start = self.vectors_of(cached, examples)?;
        let h = self.hidden;
        let mut centroids = vec![0f32; classes * h];
        for (v, &c) in start.iter().zip(y) {
            let row = &mut centroids[c as usize * h..(c as usize + 1) * h];
            row.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
        for row in centroids.chunks_mut(h) {
            let n = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|a| *a /= n);
        }
        let w = Var::from_tensor(&Tensor::from_vec(centroids, (classes, h), &Device::Cpu)?)?;
        let bias = Var::zeros(classes, DType::F32, &Device::Cpu)?;
        let mut enc_opt = candle_nn::AdamW::new(
            self.vars(),
            candle_nn::ParamsAdamW {
                lr: opts.learning_rate,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?;
        let mut head_opt = candle_nn::AdamW::new(
            vec![w.clone(), bias.clone()],
            candle_nn::ParamsAdamW {
                lr: opts.head_learning_rate,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let batch = opts.batch_size.max(1);
        let epochs = opts.epochs.max(1);
        let steps_per_epoch = examples.len().div_ceil(batch);
        let total = (steps_per_epoch * epochs) as f64;
        let warmup = (total * 0.06).max(1.0);
        let mut step = 0usize;
        let mut order: Vec<usize> = (0..examples.len()).collect();
        for epoch in 1..=epochs {
            let batches = length_batches(&mut rng, &mut order, batch, |i| cached.lens[examples[i]]);
            let (mut loss_sum, mut right, mut seen) = (0f64, 0usize, 0usize);
            for (s, chunk) in batches.iter().enumerate() {
                let f = step as f64;
                let rate = if f < warmup {
                    (f + 1.0) / warmup
                } else {
                    1.0 - 0.9 * (f - warmup) / (total - warmup).max(1.0)
                };
                enc_opt.set_learning_rate(opts.learning_rate * rate);
                head_opt.set_learning_rate(opts.head_learning_rate * rate);
                step += 1;
                let idx: Vec<usize> = chunk.iter().map(|&i| examples[i]).collect();
                let (x, mask, attn) = self.batch(cached, &idx)?;
                let v = self.forward(&x, &mask, &attn, Some((&mut rng, opts.dropout)))?;
                let logits = (v * SCALE)?
                    .matmul(&w.as_tensor().t()?)?
                    .broadcast_add(bias.as_tensor())?;
                let yb: Vec<u32> = chunk.iter().map(|&i| y[i]).collect();
                let pred = logits.argmax(1)?.to_vec1::<u32>()?;
                right += pred.iter().zip(&yb).filter(|(p, t)| p == t).count();
                let yb = Tensor::from_vec(yb, chunk.len(), &Device::Cpu)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
                let grads = loss.backward()?;
                enc_opt.step(&grads)?;
                head_opt.step(&grads)?;
                loss_sum += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
                seen += chunk.len();
                let last = s + 1 == batches.len();
                let val_accuracy = match val {
                    Some(v) if last && !v.examples.is_empty() => {
                        Some(self.task_accuracy(cached, v, &w, &bias)?)
                    }
                    _ => None,
                };
                progress(&FineTuneProgress {
                    epoch,
                    epochs,
                    step: s + 1,
                    steps: batches.len(),
                    loss: (loss_sum / seen as f64) as f32,
                    accuracy: right as f32 / seen as f32,
                    val_accuracy,
                });
            }
        }
        Ok(())
    }

    /// How many of `val` the task layer `(w, bias)` classifies right, as a share.
    fn task_accuracy(&self, cached: &Cached, val: Labelled, w: &Var, bias: &Var) -> Result<f32> {
        let v = self.vectors_of(cached, val.examples)?;
        let rows: Vec<&[f32]> = v.iter().map(Vec::as_slice).collect();
        let x = super::head::matrix(&rows)?;
        let pred = (x * SCALE)?
            .matmul(&w.as_tensor().t()?)?
            .broadcast_add(bias.as_tensor())?
            .argmax(1)?
            .to_vec1::<u32>()?;
        let right = pred.iter().zip(val.y).filter(|(p, t)| p == t).count();
        Ok(right as f32 / val.y.len().max(1) as f32)
    }

    /// The tuned tensors by checkpoint name.
    fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (l, names) in self.layers.iter().zip(&self.names) {
            for (v, n) in l.0.iter().zip(names) {
                out.push((n.clone(), v.as_tensor().copy()?));
            }
        }
        Ok(out)
    }

    /// Writes the tuned encoder as a model directory at `out` (created): `base`'s files
    /// with the tuned layers in `model.safetensors` and a manifest of its own. Returns
    /// that manifest (its fingerprint is what the classifier records).
    pub fn write(&self, base: &EmbeddingModel, out: &Path, name: &str) -> Result<Manifest> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| ClassifierError::io(p, e)
        };
        std::fs::create_dir_all(out).map_err(io(out))?;
        let (mut tensors, _) = checkpoint(base)?;
        for (n, t) in self.tensors()? {
            let dtype = tensors.get(&n).map(|t| t.dtype()).unwrap_or(DType::F32);
            tensors.insert(n, t.to_dtype(dtype)?);
        }
        let weights = out.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights)?;
        drop(tensors);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&weights, std::fs::Permissions::from_mode(0o644))
                .map_err(io(&weights))?;
        }
        let bm = base.manifest();
        let sum = |path: &Path| {
            sha256_file(path).map_err(|e| ClassifierError::artefact(out, e.to_string()))
        };
        // The base's files but its weights, which are replaced by model.safetensors.
        let mut files = std::collections::BTreeMap::new();
        for file in bm
            .files
            .keys()
            .filter(|f| *f != "model.safetensors" && *f != "pytorch_model.bin")
        {
            let to = out.join(file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::copy(base.dir().join(file), &to).map_err(io(&to))?;
            files.insert(file.clone(), sum(&to)?);
        }
        files.insert("model.safetensors".to_string(), sum(&weights)?);
        let manifest = Manifest {
            model: ModelInfo {
                name: name.to_string(),
                source: Some(format!(
                    "fine-tuned from {} (fingerprint {}): top {} of {} layers",
                    bm.model.name,
                    bm.fingerprint(),
                    self.layers.len(),
                    self.first + self.layers.len()
                )),
                ..bm.model.clone()
            },
            scores: bm.scores.clone(),
            files,
        };
        let text = toml::to_string(&manifest)
            .map_err(|e| ClassifierError::artefact(out, e.to_string()))?;
        let path = out.join(crate::MANIFEST_FILE);
        std::fs::write(
            &path,
            format!("# Written by `confidantctl intents train --fine-tune`.\n{text}"),
        )
        .map_err(io(&path))?;
        Ok(manifest)
    }
}

fn layer_norm(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(g)?
        .broadcast_add(b)
}

/// Inverted dropout with our seeded generator (Candle's draws from an unseeded one).
fn apply_dropout(x: Tensor, dropout: Option<&mut (&mut Rng, f32)>) -> candle_core::Result<Tensor> {
    let Some((rng, p)) = dropout else {
        return Ok(x);
    };
    let p = *p;
    if p <= 0.0 {
        return Ok(x);
    }
    let mask = rng.dropout_mask(x.elem_count(), p);
    let shape = x.shape().clone();
    x * Tensor::from_vec(mask, shape, &Device::Cpu)?
}

/// Batches of similar length in random order: shuffled, sorted by length within groups
/// of 16 batches, cut, and the batches shuffled again.
fn length_batches(
    rng: &mut Rng,
    order: &mut [usize],
    batch: usize,
    len: impl Fn(usize) -> usize,
) -> Vec<Vec<usize>> {
    rng.shuffle(order);
    let mut out = Vec::new();
    for group in order.chunks(batch * 16) {
        let mut g = group.to_vec();
        g.sort_by_key(|&i| len(i));
        out.extend(g.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut out);
    out
}
