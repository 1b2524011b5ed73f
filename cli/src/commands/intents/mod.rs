//! `confidantctl intents`: train a classifier head on the customer's own labelled
//! utterances (on this machine; nothing leaves it), evaluate it, and try it.

mod data;
mod encoder;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use confidant_inference::classifier::{
    self, Classifier, EncoderRef, Example, FineTuneOptions, FineTuned, HeadKind, HeadOptions,
    Labelled, LexicalOptions, OosScore, Outcome, Report, TrainOptions, TunedLayers,
};
use confidant_inference::{EmbeddingModel, LoadOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::Cli;
use crate::output::{json, table};
use data::{Columns, Loaded};
use encoder::{Encoder, EncoderArgs};

#[derive(Subcommand)]
pub enum IntentsCommand {
    /// Train a classifier head (intents, sentiment, ...) from CSV or JSONL.
    Train(TrainArgs),
    /// Accuracy, macro-F1, out-of-scope precision/recall, worst intents, confusions.
    Eval(EvalArgs),
    /// Classify texts; one JSON line each.
    Predict(PredictArgs),
}

#[derive(Args)]
struct ColumnArgs {
    /// The column (CSV) or key (JSONL) holding the utterance.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// The column or key holding the label (BANKING77: category).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// The label that marks out-of-scope examples.
    #[arg(long, default_value = "out_of_scope")]
    oos_label: String,
}

impl ColumnArgs {
    fn columns(&self) -> Columns<'_> {
        Columns {
            text: &self.text_column,
            label: &self.label_column,
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled utterances: .csv, or .jsonl with one object per line.
    #[arg(long)]
    data: PathBuf,
    /// The artefact directory to write (replaced whole if it exists).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    columns: ColumnArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
    /// What the head classifies (recorded in the artefact): intent, sentiment, ...
    #[arg(long, default_value = "intent")]
    task: String,
    /// linear (logistic regression) or mlp (one hidden layer).
    #[arg(long, default_value = "mlp")]
    head: HeadKind,
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.2)]
    dropout: f32,
    /// Same data, same seed, same weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of each label held out to calibrate probabilities and the threshold.
    #[arg(long, default_value_t = 0.1)]
    holdout: f32,
    /// Keep the head fitted without the held-out split instead of training it again on
    /// every example once the threshold is calibrated.
    #[arg(long)]
    no_refit: bool,
    /// nearest (similarity to the closest training utterance) or max-prob.
    #[arg(long, default_value = "nearest")]
    oos_score: OosScore,
    /// Use this out-of-scope threshold instead of calibrating one.
    #[arg(long)]
    oos_threshold: Option<f32>,
    /// Without out-of-scope examples: the share of held-out in-scope inputs to keep.
    #[arg(long, default_value_t = 0.97)]
    coverage: f32,
    /// A label with fewer examples is an error.
    #[arg(long, default_value_t = 5)]
    min_examples: usize,
    /// Drop invalid rows and too-small labels instead of refusing to train.
    #[arg(long)]
    skip_invalid: bool,
    /// Train the sentence-vector head alone, without the lexical head on word and
    /// character n-grams beside it.
    #[arg(long)]
    no_lexical: bool,
    /// Lexical head: terms seen in fewer training utterances are dropped.
    #[arg(long, default_value_t = LexicalOptions::default().min_df)]
    lexical_min_df: usize,
    #[arg(long, default_value_t = LexicalOptions::default().epochs)]
    lexical_epochs: usize,
    /// Fine-tune the encoder's top layers for this task first (needs --local): better
    /// accuracy for minutes of training; the artefact then carries its own encoder,
    /// which the daemon runs for this classifier beside the knowledge-base encoder.
    #[arg(long)]
    fine_tune: bool,
    /// How many top layers of the encoder --fine-tune trains.
    #[arg(long, default_value_t = FineTuneOptions::default().layers)]
    fine_tune_layers: usize,
    #[arg(long, default_value_t = FineTuneOptions::default().epochs)]
    fine_tune_epochs: usize,
    /// The encoder layers' peak learning rate for --fine-tune.
    #[arg(long, default_value_t = FineTuneOptions::default().learning_rate)]
    fine_tune_lr: f64,
    /// --fine-tune keeps the frozen layers' output of every utterance in memory: refuse
    /// to train when that would pass this many MiB (default: half the memory available
    /// when training starts).
    #[arg(long)]
    fine_tune_max_cache_mb: Option<u64>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    classifier: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    columns: ColumnArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
    /// Override the artefact's out-of-scope threshold.
    #[arg(long)]
    oos_threshold: Option<f32>,
    /// How many worst intents and confused pairs to list.
    #[arg(long, default_value_t = 10)]
    worst: usize,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    classifier: PathBuf,
    #[command(flatten)]
    encoder: EncoderArgs,
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    #[arg(required = true)]
    texts: Vec<String>,
}

pub async fn run(cli: &Cli, command: &IntentsCommand) -> anyhow::Result<()> {
    match command {
        IntentsCommand::Train(a) => train(cli, a).await,
        IntentsCommand::Eval(a) => eval(cli, a).await,
        IntentsCommand::Predict(a) => predict(cli, a).await,
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.enable_steady_tick(Duration::from_millis(250));
    b
}

async fn embed_all(
    enc: &mut Encoder,
    texts: &[String],
    quiet: bool,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let b = (!quiet).then(|| {
        bar(
            texts.len() as u64,
            "embedding {bar:30} {pos}/{len} utterances {per_sec} eta {eta}",
        )
    });
    let v = enc.embed(texts, b.as_ref()).await?;
    if let Some(b) = b {
        b.finish_and_clear();
    }
    Ok(v)
}

fn load(path: &Path, columns: &ColumnArgs) -> anyhow::Result<Loaded> {
    data::read(path, &columns.columns())
}

async fn train(cli: &Cli, a: &TrainArgs) -> anyhow::Result<()> {
    if !(0.0..0.9).contains(&a.holdout) {
        bail!("--holdout must be at least 0 and below 0.9");
    }
    if a.fine_tune && !a.encoder.local {
        bail!(
            "--fine-tune trains in this process: add --local --model-dir DIR (the model directory the daemon serves)"
        );
    }
    if a.fine_tune && a.fine_tune_epochs == 0 {
        bail!("--fine-tune-epochs must be at least 1");
    }
    if a.fine_tune && !(a.fine_tune_lr > 0.0 && a.fine_tune_lr < 1.0) {
        bail!("--fine-tune-lr must be above 0 and below 1");
    }
    let mut loaded = load(&a.data, &a.columns)?;
    data::check_for_training(&mut loaded, a.min_examples, &a.columns.oos_label);
    loaded.print_problems();
    if loaded.errors() > 0 {
        if !a.skip_invalid {
            bail!(
                "{}: {} error(s) above; fix them or pass --skip-invalid to train without those rows",
                a.data.display(),
                loaded.errors()
            );
        }
        data::drop_invalid(&mut loaded, a.min_examples, &a.columns.oos_label);
    }
    let started = Instant::now();
    let mut enc = Encoder::open(cli, &a.encoder).await?;
    let texts: Vec<String> = loaded.rows.iter().map(|r| r.text.clone()).collect();
    let opts = train_options(a);
    let (vectors, reference, tuned) = match &enc {
        Encoder::Local(model) if a.fine_tune => {
            let labels: Vec<&str> = loaded.rows.iter().map(|r| r.label.as_str()).collect();
            let (vectors, reference, how, dir) =
                fine_tune(cli, a, model, &texts, &labels, &opts, enc.reference())?;
            (vectors, reference, Some((how, dir)))
        }
        _ => (
            embed_all(&mut enc, &texts, cli.json).await?,
            enc.reference(),
            None,
        ),
    };
    let embed_seconds = started.elapsed().as_secs_f64();
    let examples: Vec<Example> = vectors
        .into_iter()
        .zip(&loaded.rows)
        .map(|(vector, r)| Example {
            text: r.text.clone(),
            vector,
            label: r.label.clone(),
        })
        .collect();
    let passes = if opts.refit && opts.holdout > 0.0 {
        2
    } else {
        1
    };
    let b = (!cli.json).then(|| {
        bar(
            (a.epochs * passes) as u64,
            "training {bar:30} {pos}/{len} epochs {msg}",
        )
    });
    let trained = classifier::train(&examples, reference, &opts, &mut |r| {
        if let Some(b) = &b {
            b.inc(1);
            b.set_message(match (r.refit, r.val_accuracy) {
                (true, _) => format!("refit on every example, loss {:.4}", r.loss),
                (false, Some(acc)) => {
                    format!("loss {:.4}  held-out accuracy {:.2}%", r.loss, acc * 100.0)
                }
                (false, None) => format!("loss {:.4}", r.loss),
            });
        }
    });
    if let Some(b) = b {
        b.finish_and_clear();
    }
    let mut classifier = match (trained, &tuned) {
        (Ok(c), _) => c,
        (Err(e), Some((_, dir))) => {
            // The tuned encoder was written for this artefact alone.
            let _ = std::fs::remove_dir_all(dir);
            return Err(e.into());
        }
        (Err(e), None) => return Err(e.into()),
    };
    if let Some((how, dir)) = tuned {
        classifier.attach_encoder(dir, how);
    }
    classifier
        .save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    report_training(cli, a, &classifier, embed_seconds, started)
}

fn train_options(a: &TrainArgs) -> TrainOptions {
    TrainOptions {
        task: a.task.clone(),
        head: HeadOptions {
            kind: a.head,
            hidden: a.hidden,
            epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            weight_decay: a.weight_decay,
            dropout: a.dropout,
        },
        seed: a.seed,
        holdout: a.holdout,
        oos_label: a.columns.oos_label.clone(),
        oos_threshold: a.oos_threshold,
        oos_score: a.oos_score,
        coverage: a.coverage,
        refit: !a.no_refit,
        lexical: (!a.no_lexical).then(|| LexicalOptions {
            min_df: a.lexical_min_df,
            epochs: a.lexical_epochs,
            ..Default::default()
        }),
    }
}

/// `--fine-tune`: the encoder's top layers trained on the examples the head will fit on
/// (not the held-out ones, which must stay unseen to calibrate it), written as a model
/// directory beside the artefact; returns every example's vector from it.
fn fine_tune(
    cli: &Cli,
    a: &TrainArgs,
    model: &EmbeddingModel,
    texts: &[String],
    labels: &[&str],
    opts: &TrainOptions,
    base: EncoderRef,
) -> anyhow::Result<(Vec<Vec<f32>>, EncoderRef, FineTuned, PathBuf)> {
    let started = Instant::now();
    let split = classifier::split(labels, opts)?;
    let reject = split.labels.len() as u32;
    let has_reject = split.train.iter().any(|&i| split.y[i] == reject);
    // Out-of-scope examples take part only as a class of their own.
    let usable = |idx: &[usize]| -> (Vec<usize>, Vec<u32>) {
        idx.iter()
            .filter(|&&i| split.y[i] != reject || has_reject)
            .map(|&i| (i, split.y[i]))
            .unzip()
    };
    let (train, y) = usable(&split.train);
    // The held-out split is the progress bar's validation: the task layer's accuracy
    // after each epoch.
    let (val, val_y) = usable(&split.held);
    let ft = FineTuneOptions {
        layers: a.fine_tune_layers,
        epochs: a.fine_tune_epochs,
        learning_rate: a.fine_tune_lr,
        seed: a.seed,
        ..Default::default()
    };
    let mut tuned = TunedLayers::new(model, ft.layers)?;
    let need = tuned.cache_bytes(model, texts)?;
    let (limit, whose) = match a.fine_tune_max_cache_mb {
        Some(mb) => (Some(mb.saturating_mul(1 << 20)), "--fine-tune-max-cache-mb"),
        None => (
            available_memory().map(|b| b / 2),
            "half the memory available (--fine-tune-max-cache-mb)",
        ),
    };
    if let Some(limit) = limit
        && need > limit
    {
        bail!(
            "--fine-tune would keep {} MiB of the frozen layers' output for {} utterances, more than {whose} allows ({} MiB): train on fewer or shorter utterances, or raise the limit",
            need >> 20,
            texts.len(),
            limit >> 20
        );
    }
    let b = (!cli.json).then(|| {
        bar(
            texts.len() as u64,
            "frozen layers {bar:30} {pos}/{len} utterances {per_sec} eta {eta}",
        )
    });
    let cached = tuned.cache(model, texts, &mut |n| {
        if let Some(b) = &b {
            b.inc(n as u64);
        }
    })?;
    if let Some(b) = b {
        b.finish_and_clear();
    }
    let b = (!cli.json).then(|| {
        bar(
            0,
            "fine-tuning {bar:30} epoch {msg} batch {pos}/{len} eta {eta}",
        )
    });
    let mut holdout_accuracy = None;
    tuned.train(
        &cached,
        Labelled {
            examples: &train,
            y: &y,
        },
        Some(Labelled {
            examples: &val,
            y: &val_y,
        }),
        split.labels.len() + usize::from(has_reject),
        &ft,
        &mut |p| {
            if p.val_accuracy.is_some() {
                holdout_accuracy = p.val_accuracy;
            }
            if let Some(b) = &b {
                if p.step == 1 {
                    b.set_length(p.steps as u64);
                    b.set_position(0);
                }
                b.set_position(p.step as u64);
                b.set_message(format!(
                    "{}/{}  loss {:.4}  train accuracy {:.2}%",
                    p.epoch,
                    p.epochs,
                    p.loss,
                    p.accuracy * 100.0
                ));
                if let Some(v) = p.val_accuracy {
                    b.println(format!(
                        "fine-tune epoch {}/{}: loss {:.4}, train accuracy {:.2}%, held-out accuracy {:.2}%",
                        p.epoch,
                        p.epochs,
                        p.loss,
                        p.accuracy * 100.0,
                        v * 100.0
                    ));
                }
            }
        },
    )?;
    if let Some(b) = b {
        b.finish_and_clear();
    }
    let vectors = tuned.vectors(&cached)?;
    let name = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "classifier".into());
    // Beside the artefact (same file system): moved into it when it is saved.
    let dir = a
        .out
        .with_file_name(format!(".{name}.encoder-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let manifest = tuned.write(model, &dir, &format!("{}+{}", base.name, a.task))?;
    let reference = EncoderRef {
        name: manifest.model.name.clone(),
        fingerprint: manifest.fingerprint(),
        dimension: manifest.model.dimension,
    };
    let how = FineTuned {
        base,
        layers: ft.layers,
        epochs: ft.epochs,
        examples: train.len(),
        seconds: started.elapsed().as_secs_f64(),
        holdout_accuracy,
    };
    if !cli.json {
        println!(
            "fine-tuned the top {} layers for {} epochs on {} examples in {:.1}s",
            how.layers, how.epochs, how.examples, how.seconds
        );
    }
    Ok((vectors, reference, how, dir))
}

/// MemAvailable of /proc/meminfo in bytes; `None` where there is no such file.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

fn report_training(
    cli: &Cli,
    a: &TrainArgs,
    classifier: &Classifier,
    embed_seconds: f64,
    started: Instant,
) -> anyhow::Result<()> {
    let m = classifier
        .metrics()
        .context("training produced no metrics")?;
    let total = started.elapsed().as_secs_f64();
    if cli.json {
        json(&json!({
            "out": a.out, "version": classifier.version(), "labels": classifier.labels().len(),
            "encoder": classifier.encoder().name, "embed_seconds": embed_seconds,
            "seconds": total, "metrics": m, "fine_tuned": classifier.fine_tuned(),
        }));
        return Ok(());
    }
    println!(
        "wrote {} (version {}, {} labels, encoder {})",
        a.out.display(),
        classifier.version(),
        classifier.labels().len(),
        classifier.encoder().name
    );
    let encoder_work = if classifier.fine_tuned().is_some() {
        "fine-tuning and embedding"
    } else {
        "embedding"
    };
    println!(
        "examples: {} train, {} held out, {} out-of-scope; {encoder_work} {:.1}s, head {:.1}s",
        m.train_examples, m.holdout_examples, m.out_of_scope_examples, embed_seconds, m.seconds
    );
    println!(
        "calibration: temperature {:.3}, out-of-scope threshold {:.4} ({})",
        m.temperature, m.oos_threshold, m.threshold_source
    );
    if let (Some(w), Some(v), Some(l)) = (
        m.lexical_weight,
        m.vector_head_accuracy,
        m.lexical_head_accuracy,
    ) {
        println!(
            "heads on the held-out split: sentence vectors {}, lexical {}; served: vectors + {w} × lexical",
            pct(v),
            pct(l)
        );
    }
    print_report("held-out split (first fit)", &m.holdout);
    if m.refit_examples > 0 {
        println!(
            "refit on all {} examples; the served head is that one",
            m.refit_examples
        );
    }
    Ok(())
}

fn pct(x: f32) -> String {
    format!("{:.2}%", x * 100.0)
}

fn print_report(title: &str, r: &Report) {
    println!(
        "{title}: {} examples ({} in scope, {} out of scope)",
        r.examples, r.in_scope_examples, r.out_of_scope_examples
    );
    println!(
        "  accuracy (closed set) {}  in-scope accuracy {}  macro-F1 {}",
        pct(r.closed_set_accuracy),
        pct(r.in_scope_accuracy),
        pct(r.macro_f1)
    );
    if let (Some(p), Some(rc)) = (r.oos_precision, r.oos_recall) {
        println!("  out of scope: precision {}  recall {}", pct(p), pct(rc));
    }
    if !r.worst.is_empty() {
        println!("worst intents:");
        let rows: Vec<Vec<String>> = r
            .worst
            .iter()
            .map(|l| {
                vec![
                    l.label.clone(),
                    l.support.to_string(),
                    pct(l.precision),
                    pct(l.recall),
                    pct(l.f1),
                ]
            })
            .collect();
        table(&["intent", "support", "precision", "recall", "f1"], &rows);
    }
    if !r.confused.is_empty() {
        println!("most confused:");
        let rows: Vec<Vec<String>> = r
            .confused
            .iter()
            .map(|c| vec![c.truth.clone(), c.predicted.clone(), c.count.to_string()])
            .collect();
        table(&["truth", "predicted", "count"], &rows);
    }
}

/// Loads the artefact and the encoder that feeds it: its own fine-tuned encoder when it
/// carries one, otherwise `--local`'s or the daemon's, refused unless the head was
/// trained against it.
async fn open_classifier(
    cli: &Cli,
    dir: &Path,
    args: &EncoderArgs,
) -> anyhow::Result<(Classifier, Encoder)> {
    let c = Classifier::load(dir)?;
    if let Some(enc_dir) = c.encoder_dir() {
        let model = EmbeddingModel::load(
            enc_dir,
            &LoadOptions {
                device: args.device,
                ..Default::default()
            },
        )
        .with_context(|| format!("loading the classifier's encoder {}", enc_dir.display()))?;
        return Ok((c, Encoder::Local(Box::new(model))));
    }
    let enc = Encoder::open(cli, args).await?;
    Ok((
        Classifier::load_for(dir, &enc.reference().fingerprint)?,
        enc,
    ))
}

async fn eval(cli: &Cli, a: &EvalArgs) -> anyhow::Result<()> {
    let loaded = load(&a.data, &a.columns)?;
    loaded.print_problems();
    if loaded.errors() > 0 {
        bail!("{}: {} error(s) above", a.data.display(), loaded.errors());
    }
    let (mut c, mut enc) = open_classifier(cli, &a.classifier, &a.encoder).await?;
    if let Some(t) = a.oos_threshold {
        c = c.with_threshold(t);
    }
    let texts: Vec<String> = loaded.rows.iter().map(|r| r.text.clone()).collect();
    let vectors = embed_all(&mut enc, &texts, cli.json).await?;
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = c.predict(&text_refs, &vectors, 1)?;
    let known: std::collections::HashSet<&str> = c.labels().iter().map(String::as_str).collect();
    let mut unknown = std::collections::BTreeSet::new();
    let outcomes: Vec<Outcome> = loaded
        .rows
        .iter()
        .zip(&predictions)
        .map(|(row, p)| {
            let truth = (row.label != a.columns.oos_label).then(|| row.label.clone());
            if let Some(t) = &truth
                && !known.contains(t.as_str())
            {
                unknown.insert(t.clone());
            }
            Outcome {
                truth,
                top: p.top.first().map(|t| t.0.clone()).unwrap_or_default(),
                out_of_scope: p.out_of_scope,
            }
        })
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "warning: {} label(s) in the data are unknown to the classifier (counted as errors): {}",
            unknown.len(),
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let r = classifier::report(&outcomes, a.worst);
    if cli.json {
        json(&json!({
            "classifier": a.classifier, "version": c.version(), "oos_threshold": c.oos_threshold(),
            "report": r,
        }));
    } else {
        println!(
            "classifier {} (version {}), out-of-scope threshold {:.4}",
            a.classifier.display(),
            c.version(),
            c.oos_threshold()
        );
        print_report(&a.data.display().to_string(), &r);
    }
    Ok(())
}

async fn predict(cli: &Cli, a: &PredictArgs) -> anyhow::Result<()> {
    if let Some(i) = a.texts.iter().position(|t| t.trim().is_empty()) {
        bail!("texts[{i}]: must not be empty");
    }
    let (c, mut enc) = open_classifier(cli, &a.classifier, &a.encoder).await?;
    let vectors = enc.embed(&a.texts, None).await?;
    let texts: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    for (text, p) in a.texts.iter().zip(c.predict(&texts, &vectors, a.top_k)?) {
        let best = p.top.first().cloned().unwrap_or_default();
        json(&json!({
            "text": text,
            "label": if p.out_of_scope { None } else { Some(best.0.clone()) },
            "probability": best.1,
            "out_of_scope": p.out_of_scope,
            "oos_score": p.oos_score,
            "top": p.top.iter().map(|(l, pr)| json!({"label": l, "probability": pr})).collect::<Vec<_>>(),
        }));
    }
    Ok(())
}
