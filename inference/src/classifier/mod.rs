//! Classifier heads on top of the embedding encoder: intents, sentiment, any label set an
//! operator trains on-prem. One mechanism, several trained heads.
//!
//! A head is trained on the encoder's sentence vectors (the encoder stays frozen), beside
//! a lexical head on the utterances' word and character n-grams ([`lexical`]); their
//! logits are summed with a weight chosen on a held-out split, the probabilities are
//! calibrated there too (temperature scaling), and an
//! out-of-scope threshold is chosen there too, so that "none of our intents" is an
//! answer rather than a wrong guess. The artefact is a directory (see [`artefact`]) tied
//! to the encoder it was trained against by the encoder's fingerprint.

mod artefact;
mod calibrate;
mod error;
mod few;
mod finetune;
mod head;
mod lexical;
mod metrics;
mod rng;
mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use artefact::{
    CLASSIFIER_FILE, ENCODER_DIR, FineTuned, LEXICON_FILE, METRICS_FILE, WEIGHTS_FILE,
};
pub use calibrate::OosScore;
pub use error::ClassifierError;
pub use finetune::{Cached, FineTuneOptions, FineTuneProgress, Labelled, TunedLayers};
pub use head::{EpochReport, HeadKind, HeadOptions};
pub use lexical::LexicalOptions;
pub use metrics::{Confusion, LabelFigures, Outcome, Report, report};

use head::{Head, matrix};
use lexical::LexicalHead;

type Result<T> = std::result::Result<T, ClassifierError>;

/// The rows to classify, as the path that takes them wants them.
enum Rows<'a> {
    Few(&'a [Vec<f32>]),
    Many(Tensor),
}

fn matrix_of(vectors: &[Vec<f32>]) -> candle_core::Result<Tensor> {
    let rows: Vec<&[f32]> = vectors.iter().map(|v| v.as_slice()).collect();
    matrix(&rows)
}

/// The encoder a head was trained against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderRef {
    pub name: String,
    /// [`crate::Manifest::fingerprint`] of the encoder's model directory.
    pub fingerprint: String,
    pub dimension: usize,
}

/// One labelled utterance: its text (for the lexical head) and its sentence vector.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub vector: Vec<f32>,
    pub label: String,
}

/// How to train a head.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// What the head classifies ("intent", "sentiment", ...).
    pub task: String,
    pub head: HeadOptions,
    pub seed: u64,
    /// Share of each label's examples held out for calibration and the report.
    pub holdout: f32,
    /// Examples carrying this label are out-of-scope examples: trained as a reject class
    /// and used to choose the threshold. Never returned as an intent.
    pub oos_label: String,
    /// The operator's threshold; chosen on the held-out split when `None`.
    pub oos_threshold: Option<f32>,
    pub oos_score: OosScore,
    /// Without out-of-scope examples, the share of held-out in-scope inputs to keep.
    pub coverage: f32,
    /// After calibrating on the held-out split, train the head again on every example
    /// (same seed and epochs) so that no labelled utterance is wasted. The temperature
    /// and threshold stay those calibrated on the held-out split, and the held-out
    /// report describes the first fit.
    pub refit: bool,
    /// The lexical head beside the sentence-vector head (`None`: vectors only).
    pub lexical: Option<LexicalOptions>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            task: "intent".into(),
            head: HeadOptions::default(),
            seed: 42,
            holdout: 0.1,
            oos_label: "out_of_scope".into(),
            oos_threshold: None,
            oos_score: OosScore::default(),
            coverage: 0.97,
            refit: true,
            lexical: Some(LexicalOptions::default()),
        }
    }
}

/// What training measured, kept beside the weights as `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingMetrics {
    pub train_examples: usize,
    pub holdout_examples: usize,
    pub out_of_scope_examples: usize,
    pub labels: usize,
    pub epochs: usize,
    pub seconds: f64,
    pub temperature: f32,
    pub oos_threshold: f32,
    pub threshold_source: String,
    /// The held-out split, with the final decision rule.
    pub holdout: Report,
    /// Examples of the second fit on everything (0: no refit).
    #[serde(default)]
    pub refit_examples: usize,
    /// The lexical head's weight in the sum of logits chosen on the held-out split (0: the
    /// head was dropped; absent: none trained).
    #[serde(default)]
    pub lexical_weight: Option<f32>,
    /// Closed-set accuracy on the held-out split of each head alone.
    #[serde(default)]
    pub vector_head_accuracy: Option<f32>,
    #[serde(default)]
    pub lexical_head_accuracy: Option<f32>,
}

/// One input's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The best in-scope labels with calibrated probabilities, most likely first.
    pub top: Vec<(String, f32)>,
    pub out_of_scope: bool,
    /// The score the threshold was compared with.
    pub oos_score: f32,
}

/// A trained head, ready to predict.
#[derive(Debug, Clone)]
pub struct Classifier {
    meta: artefact::Meta,
    head: Head,
    lexical: Option<LexicalHead>,
    /// Unit-length training vectors, for the nearest-neighbour out-of-scope score.
    memory: Option<few::Matrix>,
    metrics: Option<TrainingMetrics>,
    /// The fine-tuned encoder's model directory: where training wrote it until the
    /// artefact is saved, inside the artefact afterwards.
    encoder_dir: Option<PathBuf>,
    /// `encoder_dir` was written for this artefact alone: saving moves it in (otherwise
    /// it belongs to a saved artefact and is copied).
    encoder_staged: bool,
}

impl Classifier {
    pub fn task(&self) -> &str {
        &self.meta.classifier.task
    }

    pub fn version(&self) -> &str {
        &self.meta.classifier.version
    }

    pub fn labels(&self) -> &[String] {
        &self.meta.head.labels
    }

    pub fn encoder(&self) -> &EncoderRef {
        &self.meta.encoder
    }

    pub fn oos_threshold(&self) -> f32 {
        self.meta.out_of_scope.threshold
    }

    pub fn oos_score(&self) -> OosScore {
        self.meta.out_of_scope.score
    }

    pub fn metrics(&self) -> Option<&TrainingMetrics> {
        self.metrics.as_ref()
    }

    /// The model directory of the encoder fine-tuned for this head, which serves it in
    /// place of the knowledge-base encoder; `None` for a head on the base encoder.
    pub fn encoder_dir(&self) -> Option<&Path> {
        self.encoder_dir.as_deref()
    }

    pub fn fine_tuned(&self) -> Option<&FineTuned> {
        self.meta.fine_tuned.as_ref()
    }

    /// Makes this head's encoder the fine-tuned one written at `dir` (moved into the
    /// artefact when it is saved). The head must have been trained on its vectors.
    pub fn attach_encoder(&mut self, dir: PathBuf, how: FineTuned) {
        self.encoder_dir = Some(dir);
        self.encoder_staged = true;
        self.meta.fine_tuned = Some(how);
    }

    /// A copy with the operator's threshold in place of the calibrated one.
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.meta.out_of_scope.threshold = threshold;
        self.meta.out_of_scope.source = "operator".into();
        self
    }

    pub fn load(dir: &Path) -> Result<Self> {
        artefact::load(dir)
    }

    /// Loads a head and refuses it unless it was trained against `encoder_fingerprint`
    /// (a head with its own fine-tuned encoder was checked against that one instead).
    pub fn load_for(dir: &Path, encoder_fingerprint: &str) -> Result<Self> {
        let c = artefact::load(dir)?;
        if c.encoder_dir.is_none() && c.meta.encoder.fingerprint != encoder_fingerprint {
            return Err(ClassifierError::EncoderMismatch {
                path: dir.to_path_buf(),
                trained: c.meta.encoder.fingerprint.clone(),
                serving: encoder_fingerprint.to_string(),
            });
        }
        Ok(c)
    }

    /// Writes the artefact: into a staging directory first, then renamed into place, so
    /// that a daemon reloading `dir` never reads half a classifier. Afterwards
    /// [`Classifier::version`] is the version written (a digest of the weights).
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        let (version, sha) = artefact::save(self, dir)?;
        self.meta.classifier.version = version;
        self.meta.head.weights_sha256 = sha;
        if self.encoder_dir.is_some() {
            self.encoder_dir = Some(dir.join(ENCODER_DIR));
            self.encoder_staged = false;
        }
        Ok(())
    }

    /// The sentence-vector head's logits plus the weighted lexical head's.
    fn logits(&self, texts: &[&str], x: &Rows) -> Result<Vec<Vec<f32>>> {
        let mut z = match x {
            Rows::Few(v) => match self.head.logits_few(v) {
                Some(z) => z,
                None => self.head.logits(&matrix_of(v)?)?.to_vec2::<f32>()?,
            },
            Rows::Many(t) => self.head.logits(t)?.to_vec2::<f32>()?,
        };
        if let (Some(lex), Some(l)) = (&self.lexical, &self.meta.lexical) {
            for (row, text) in z.iter_mut().zip(texts) {
                let zl = lex.logits_of(text);
                row.iter_mut().zip(zl).for_each(|(a, b)| *a += l.weight * b);
            }
        }
        Ok(z)
    }

    fn nearest(&self, x: &Rows) -> Result<Vec<f32>> {
        match (&self.memory, x) {
            (Some(m), Rows::Few(v)) => match m.plain().and_then(|p| few::affine(v, p, None)) {
                Some(s) => Ok(s
                    .iter()
                    .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                    .collect()),
                None => Ok(matrix_of(v)?
                    .matmul(&m.tensor().t()?)?
                    .max(1)?
                    .to_vec1::<f32>()?),
            },
            (Some(m), Rows::Many(t)) => Ok(t.matmul(&m.tensor().t()?)?.max(1)?.to_vec1::<f32>()?),
            (None, _) => Err(ClassifierError::artefact(
                "(memory)",
                "the nearest-neighbour score needs the training vectors, which this artefact lacks",
            )),
        }
    }

    /// Classifies utterances: their texts and their sentence vectors (from the same
    /// encoder, unit length), in the same order.
    pub fn predict(
        &self,
        texts: &[&str],
        vectors: &[Vec<f32>],
        top_k: usize,
    ) -> Result<Vec<Prediction>> {
        if texts.len() != vectors.len() {
            return Err(ClassifierError::InvalidInput {
                field: "texts".into(),
                message: format!("{} texts for {} vectors", texts.len(), vectors.len()),
            });
        }
        if vectors.is_empty() {
            return Ok(Vec::new());
        }
        let dim = self.meta.encoder.dimension;
        if let Some((i, v)) = vectors.iter().enumerate().find(|(_, v)| v.len() != dim) {
            return Err(ClassifierError::InvalidInput {
                field: format!("vectors[{i}]"),
                message: format!("has {} dimensions, the classifier expects {dim}", v.len()),
            });
        }
        // A bot answer's one vector takes plain loops; an evaluation's thousands, Candle.
        let x = if vectors.len() <= few::MAX_ROWS {
            Rows::Few(vectors)
        } else {
            Rows::Many(matrix_of(vectors)?)
        };
        let logits = self.logits(texts, &x)?;
        let nearest = match self.meta.out_of_scope.score {
            OosScore::Nearest => Some(self.nearest(&x)?),
            OosScore::MaxProb => None,
        };
        let labels = &self.meta.head.labels;
        let n_in = labels.len();
        let t = self.meta.out_of_scope.temperature;
        Ok(logits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let p = calibrate::softmax(l, t);
                let mut ranked: Vec<(usize, f32)> =
                    p.iter().copied().take(n_in).enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let best_in = ranked.first().map(|r| r.1).unwrap_or(0.0);
                let reject_class = p.get(n_in).copied().is_some_and(|r| r > best_in);
                let score = match &nearest {
                    Some(s) => s[i],
                    None => best_in,
                };
                Prediction {
                    top: ranked
                        .into_iter()
                        .take(top_k.max(1))
                        .map(|(c, p)| (labels[c].clone(), p))
                        .collect(),
                    out_of_scope: reject_class || score < self.meta.out_of_scope.threshold,
                    oos_score: score,
                }
            })
            .collect())
    }
}

/// The lexical head's weights tried on the held-out split (0: the vector head alone).
const LEXICAL_WEIGHTS: [f32; 9] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0];

fn closed_set_accuracy(logits: &[Vec<f32>], y: &[u32]) -> f32 {
    let right = logits
        .iter()
        .zip(y)
        .filter(|(l, y)| {
            let best = l
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i as u32);
            best == Some(**y)
        })
        .count();
    right as f32 / y.len().max(1) as f32
}

/// How [`train`] divides labelled examples: the in-scope labels (sorted; the class of an
/// out-of-scope example is `labels.len()`), each example's class, and the indices of the
/// examples it fits on and of those it holds out for calibration.
#[derive(Debug, Clone)]
pub struct Split {
    pub labels: Vec<String>,
    pub y: Vec<u32>,
    pub train: Vec<usize>,
    pub held: Vec<usize>,
}

/// The split [`train`] makes of examples labelled `labels` with `opts`: a fine-tune of
/// the encoder learns from `train` alone, so that the held-out examples calibrate the
/// head on vectors the encoder never learnt from.
pub fn split(labels: &[&str], opts: &TrainOptions) -> Result<Split> {
    let names: Vec<String> = labels
        .iter()
        .filter(|l| **l != opts.oos_label)
        .map(|l| l.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.len() < 2 {
        return Err(ClassifierError::Data(format!(
            "need at least two in-scope labels, found {}",
            names.len()
        )));
    }
    let index: BTreeMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    let reject = names.len() as u32;
    let y: Vec<u32> = labels
        .iter()
        .map(|l| index.get(l).copied().unwrap_or(reject))
        .collect();
    let (train, held) = split::stratified(&y, opts.holdout, opts.seed);
    Ok(Split {
        labels: names,
        y,
        train,
        held,
    })
}

/// Trains, calibrates and evaluates a head on `examples`.
pub fn train(
    examples: &[Example],
    encoder: EncoderRef,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<Classifier> {
    let started = Instant::now();
    if let Some((i, v)) = examples
        .iter()
        .enumerate()
        .find(|(_, e)| e.vector.len() != encoder.dimension)
    {
        return Err(ClassifierError::InvalidInput {
            field: format!("examples[{i}]"),
            message: format!(
                "vector has {} dimensions, the encoder {}",
                v.vector.len(),
                encoder.dimension
            ),
        });
    }
    let names: Vec<&str> = examples.iter().map(|e| e.label.as_str()).collect();
    let Split {
        mut labels,
        y: y_all,
        train: train_idx,
        held: held_idx,
    } = split(&names, opts)?;
    let reject = labels.len() as u32;
    let has_reject_class = train_idx.iter().any(|&i| y_all[i] == reject);
    let classes = labels.len() + usize::from(has_reject_class);

    let dim = encoder.dimension;
    let stack = |idx: &[usize]| -> Result<(Tensor, Vec<u32>)> {
        let rows: Vec<&[f32]> = idx.iter().map(|&i| examples[i].vector.as_slice()).collect();
        let x = if rows.is_empty() {
            Tensor::zeros((0, dim), candle_core::DType::F32, &Device::Cpu)?
        } else {
            matrix(&rows)?
        };
        Ok((x, idx.iter().map(|&i| y_all[i]).collect()))
    };
    let (x_train, y_train) = stack(&train_idx)?;
    // Held-out out-of-scope examples with no reject class to learn can only inform the
    // threshold; the closed-set validation accuracy is over in-scope examples.
    let held_in: Vec<usize> = held_idx
        .iter()
        .copied()
        .filter(|&i| y_all[i] != reject || has_reject_class)
        .collect();
    let (x_val, y_val) = stack(&held_in)?;
    let val = (!y_val.is_empty()).then_some((&x_val, y_val.as_slice()));
    let head = head::train(
        &x_train, &y_train, classes, val, &opts.head, opts.seed, progress,
    )?;
    let texts_of =
        |idx: &[usize]| -> Vec<&str> { idx.iter().map(|&i| examples[i].text.as_str()).collect() };
    let lexical = opts
        .lexical
        .as_ref()
        .map(|lo| lexical::train(&texts_of(&train_idx), &y_train, classes, lo, opts.seed).0);

    let memory_idx: Vec<usize> = train_idx
        .iter()
        .copied()
        .filter(|&i| y_all[i] != reject)
        .collect();
    let memory = stack(&memory_idx)?.0;
    let mut classifier = Classifier {
        meta: artefact::Meta::new(
            &opts.task,
            opts.seed,
            encoder,
            opts.head.clone(),
            std::mem::take(&mut labels),
            has_reject_class,
            opts.oos_score,
        ),
        head,
        lexical,
        memory: Some(few::Matrix::new(memory)),
        metrics: None,
        encoder_dir: None,
        encoder_staged: false,
    };
    // The lexical head's weight: the one with the lowest calibrated negative
    // log-likelihood on the held-out split (accuracy on a few hundred examples moves in
    // steps too coarse to choose by). Without a held-out split, an even sum.
    let (mut vector_acc, mut lexical_acc, mut lexical_weight) = (None, None, None);
    if let (Some(lex), Some(lo)) = (&classifier.lexical, &opts.lexical) {
        let val_texts = texts_of(&held_in);
        let zv = classifier.head.logits(&x_val)?.to_vec2::<f32>()?;
        let zl: Vec<Vec<f32>> = val_texts.iter().map(|t| lex.logits_of(t)).collect();
        let mut weight = 1.0;
        if !y_val.is_empty() {
            let mut best = (f64::INFINITY, 1.0);
            for w in LEXICAL_WEIGHTS {
                let fused: Vec<Vec<f32>> = zv
                    .iter()
                    .zip(&zl)
                    .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a + w * b).collect())
                    .collect();
                let loss = calibrate::calibrated_nll(&fused, &y_val);
                if loss < best.0 {
                    best = (loss, w);
                }
            }
            weight = best.1;
            vector_acc = Some(closed_set_accuracy(&zv, &y_val));
            lexical_acc = Some(closed_set_accuracy(&zl, &y_val));
        }
        lexical_weight = Some(weight);
        classifier.meta.lexical = (weight > 0.0).then(|| artefact::LexicalMeta {
            weight,
            options: lo.clone(),
            terms: lex.vocabulary.len(),
            sha256: String::new(),
        });
    }
    // A lexical head the held-out split gives no weight is neither served nor stored.
    if classifier.meta.lexical.is_none() {
        classifier.lexical = None;
    }

    // Calibrate on the held-out split.
    let (x_held, y_held) = stack(&held_idx)?;
    let held_texts = texts_of(&held_idx);
    let held_logits = if y_held.is_empty() {
        Vec::new()
    } else {
        classifier.logits(&held_texts, &Rows::Many(x_held))?
    };
    let (cal_logits, cal_y): (Vec<Vec<f32>>, Vec<u32>) = held_logits
        .iter()
        .zip(&y_held)
        .filter(|(_, y)| **y != reject || has_reject_class)
        .map(|(l, y)| (l.clone(), *y))
        .unzip();
    classifier.meta.out_of_scope.temperature = calibrate::fit_temperature(&cal_logits, &cal_y);
    classifier.meta.out_of_scope.threshold = f32::NEG_INFINITY;
    let held_vectors: Vec<Vec<f32>> = held_idx
        .iter()
        .map(|&i| examples[i].vector.clone())
        .collect();
    let raw = classifier.predict(&held_texts, &held_vectors, 1)?;
    let (threshold, source) = match opts.oos_threshold {
        Some(t) => (t, "operator"),
        None => {
            let mut in_scores = Vec::new();
            let mut in_right = Vec::new();
            let mut oos_scores = Vec::new();
            for (p, &y) in raw.iter().zip(&y_held) {
                if y == reject {
                    oos_scores.push(p.oos_score);
                } else {
                    in_scores.push(p.oos_score);
                    let top = p.top.first().map(|t| t.0.as_str());
                    in_right.push(!p.out_of_scope && top == Some(&classifier.labels()[y as usize]));
                }
            }
            let source = if oos_scores.is_empty() {
                "held-out coverage"
            } else {
                "held-out out-of-scope examples"
            };
            (
                calibrate::choose_threshold(&in_scores, &in_right, &oos_scores, opts.coverage),
                source,
            )
        }
    };
    classifier.meta.out_of_scope.threshold = threshold;
    classifier.meta.out_of_scope.source = source.into();
    let final_predictions = classifier.predict(&held_texts, &held_vectors, 1)?;
    let outcomes: Vec<Outcome> = final_predictions
        .iter()
        .zip(&y_held)
        .map(|(p, &y)| Outcome {
            truth: (y != reject).then(|| classifier.labels()[y as usize].clone()),
            top: p.top.first().map(|t| t.0.clone()).unwrap_or_default(),
            out_of_scope: p.out_of_scope,
        })
        .collect();
    classifier.metrics = Some(TrainingMetrics {
        train_examples: train_idx.len(),
        holdout_examples: held_idx.len(),
        out_of_scope_examples: y_all.iter().filter(|&&y| y == reject).count(),
        labels: classifier.labels().len(),
        epochs: opts.head.epochs,
        seconds: started.elapsed().as_secs_f64(),
        temperature: classifier.meta.out_of_scope.temperature,
        oos_threshold: threshold,
        threshold_source: source.into(),
        holdout: report(&outcomes, 10),
        refit_examples: 0,
        lexical_weight,
        vector_head_accuracy: vector_acc,
        lexical_head_accuracy: lexical_acc,
    });
    if opts.refit && !held_idx.is_empty() {
        // Out-of-scope examples join only when the head has a reject class to learn.
        let all: Vec<usize> = (0..examples.len())
            .filter(|&i| y_all[i] != reject || has_reject_class)
            .collect();
        let (x_all, y_fit) = stack(&all)?;
        classifier.head = head::train(
            &x_all,
            &y_fit,
            classes,
            None,
            &opts.head,
            opts.seed,
            &mut |r| progress(&EpochReport { refit: true, ..*r }),
        )?;
        if let Some(l) = classifier.meta.lexical.as_mut() {
            let lex = lexical::train(&texts_of(&all), &y_fit, classes, &l.options, opts.seed).0;
            l.terms = lex.vocabulary.len();
            classifier.lexical = Some(lex);
        }
        let memory_all: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| y_all[i] != reject)
            .collect();
        classifier.memory = Some(few::Matrix::new(stack(&memory_all)?.0));
        if let Some(m) = classifier.metrics.as_mut() {
            m.refit_examples = all.len();
            m.seconds = started.elapsed().as_secs_f64();
        }
    }
    Ok(classifier)
}

#[cfg(test)]
mod tests;
