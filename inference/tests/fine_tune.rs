//! `--fine-tune` on the real default model: the trainable top layers must compute what
//! the native encoder computes, learn a small task deterministically, and write a model
//! directory that loads and embeds as they do.
//!
//! Needs the default model (`models/install-default`); skips loudly without it, except in
//! CI, where it fails.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use confidant_inference::classifier::{FineTuneOptions, Labelled, TunedLayers};
use confidant_inference::{EmbeddingModel, InputKind, LoadOptions};

fn load(name: &str, installer: &str) -> Option<EmbeddingModel> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    if !dir.join("model.safetensors").is_file() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} missing at {} in CI: run {installer}", dir.display());
        }
        eprintln!(
            "SKIPPED: {name} not installed at {} (run {installer})",
            dir.display()
        );
        return None;
    }
    Some(EmbeddingModel::load(&dir, &LoadOptions::default()).unwrap())
}

fn model() -> Option<EmbeddingModel> {
    load("all-MiniLM-L6-v2", "models/install-default")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

/// Three intents a frozen encoder confuses a little (all about cards), eight ways each.
fn task() -> (Vec<String>, Vec<u32>) {
    let rows = [
        (0, "my card has not arrived yet"),
        (0, "when will my new card be delivered"),
        (0, "still waiting for the card you sent"),
        (0, "the card in the post never came"),
        (0, "how long does card delivery take"),
        (0, "where is the card I ordered"),
        (0, "my replacement card hasn't shown up"),
        (0, "track the delivery of my card"),
        (1, "my card was declined at the shop"),
        (1, "why did the terminal refuse my card"),
        (1, "payment with my card was rejected"),
        (1, "the card does not work in stores"),
        (1, "card payment failed at the checkout"),
        (1, "my card keeps getting declined online"),
        (1, "the merchant could not charge my card"),
        (1, "my card was refused at the restaurant"),
        (2, "someone used my card without permission"),
        (2, "there is a payment on my card I did not make"),
        (2, "my card was charged by a stranger"),
        (2, "I see a transaction I don't recognise"),
        (2, "fraudulent purchase on my card"),
        (2, "unknown charge on my card statement"),
        (2, "somebody else is spending on my card"),
        (2, "a purchase I never authorised"),
    ];
    (
        rows.iter().map(|r| r.1.to_string()).collect(),
        rows.iter().map(|r| r.0).collect(),
    )
}

#[test]
fn the_trainable_layers_compute_what_the_native_encoder_does() {
    let Some(model) = model() else { return };
    let (texts, _) = task();
    for layers in [1, 2, 6] {
        let tuned = TunedLayers::new(&model, layers).unwrap();
        let cached = tuned.cache(&model, &texts, &mut |_| {}).unwrap();
        assert_eq!(cached.len(), texts.len());
        let ours = tuned.vectors(&cached).unwrap();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let native = model.embed(&refs, InputKind::Query).unwrap();
        for (a, b) in ours.iter().zip(&native) {
            let c = cosine(a, &b.vector);
            assert!(c > 0.99999, "top {layers} layers: cosine {c}");
        }
    }
    assert!(TunedLayers::new(&model, 0).is_err());
    assert!(TunedLayers::new(&model, 7).is_err());
}

/// XLM-R (multilingual-e5-small, 12 layers, `query: ` prefix, no `bert.` prefix in its
/// weights) through the same layers.
#[test]
fn the_trainable_layers_match_the_native_encoder_on_xlm_r() {
    let Some(model) = load("multilingual-e5-small", "models/install-multilingual") else {
        return;
    };
    let texts: Vec<String> = [
        "我的信用卡被盗刷了怎么办",
        "how do I reset my PIN",
        "挂号需要带什么证件",
    ]
    .map(String::from)
    .to_vec();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let native = model.embed(&refs, InputKind::Query).unwrap();
    for layers in [1, 12] {
        let tuned = TunedLayers::new(&model, layers).unwrap();
        let cached = tuned.cache(&model, &texts, &mut |_| {}).unwrap();
        for (a, b) in tuned.vectors(&cached).unwrap().iter().zip(&native) {
            let c = cosine(a, &b.vector);
            assert!(c > 0.99999, "top {layers} layers: cosine {c}");
        }
    }
}

#[test]
fn fine_tuning_learns_is_deterministic_and_writes_a_model_that_loads() {
    let Some(model) = model() else { return };
    let (texts, y) = task();
    let opts = FineTuneOptions {
        layers: 2,
        epochs: 6,
        batch_size: 8,
        learning_rate: 3e-4,
        ..Default::default()
    };
    let examples: Vec<usize> = (0..texts.len()).collect();
    let run = |seed: u64| {
        let mut tuned = TunedLayers::new(&model, opts.layers).unwrap();
        let cached = tuned.cache(&model, &texts, &mut |_| {}).unwrap();
        // Foreseen before caching, to the byte.
        assert_eq!(tuned.cache_bytes(&model, &texts).unwrap(), cached.bytes());
        let mut epochs = Vec::new();
        let opts = FineTuneOptions {
            seed,
            ..opts.clone()
        };
        let labelled = Labelled {
            examples: &examples,
            y: &y,
        };
        tuned
            .train(&cached, labelled, Some(labelled), 3, &opts, &mut |p| {
                if p.step == p.steps {
                    epochs.push((p.loss, p.accuracy, p.val_accuracy));
                }
            })
            .unwrap();
        let bad = Labelled {
            examples: &examples,
            y: &[0, 1],
        };
        let refused = tuned.train(&cached, bad, None, 3, &opts, &mut |_| {});
        assert!(refused.is_err(), "labels must match the examples");
        let vectors = tuned.vectors(&cached).unwrap();
        (tuned, vectors, epochs)
    };
    let (tuned, vectors, epochs) = run(42);
    assert_eq!(epochs.len(), 6);
    let (first, last) = (epochs[0], epochs[5]);
    assert!(last.0 < first.0 * 0.8, "loss {first:?} -> {last:?}");
    assert!(last.1 >= 0.9, "training accuracy {last:?}");
    // Reported after every epoch (here on the training examples themselves).
    assert!(epochs.iter().all(|e| e.2.is_some()), "{epochs:?}");
    assert!(last.2.unwrap() >= 0.9, "validation accuracy {last:?}");

    // Tuned vectors of one intent are closer together than before.
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let base: Vec<Vec<f32>> = model
        .embed(&refs, InputKind::Query)
        .unwrap()
        .into_iter()
        .map(|e| e.vector)
        .collect();
    let margin = |v: &[Vec<f32>]| {
        let (mut same, mut other, mut ns, mut no) = (0f32, 0f32, 0, 0);
        for i in 0..v.len() {
            for j in 0..i {
                let c = cosine(&v[i], &v[j]);
                if y[i] == y[j] {
                    (same, ns) = (same + c, ns + 1);
                } else {
                    (other, no) = (other + c, no + 1);
                }
            }
        }
        same / ns as f32 - other / no as f32
    };
    assert!(
        margin(&vectors) > margin(&base),
        "{} vs {}",
        margin(&vectors),
        margin(&base)
    );

    let dir = tempfile::tempdir().unwrap();
    let a = tuned.write(&model, &dir.path().join("a"), "tuned").unwrap();
    let (again, _, _) = run(42);
    let b = again.write(&model, &dir.path().join("b"), "tuned").unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint(), "same seed, same encoder");
    let (other, _, _) = run(7);
    let c = other.write(&model, &dir.path().join("c"), "tuned").unwrap();
    assert_ne!(
        a.fingerprint(),
        c.fingerprint(),
        "another seed, another encoder"
    );
    assert_ne!(a.fingerprint(), model.manifest().fingerprint());
    assert_eq!(a.model.name, "tuned");
    assert!(a.model.source.as_deref().unwrap().contains("top 2 of 6"));

    // The written directory is a model like any other, and embeds as the tuned layers did.
    let loaded = EmbeddingModel::load(&dir.path().join("a"), &LoadOptions::default()).unwrap();
    let served = loaded.embed(&refs, InputKind::Query).unwrap();
    for (v, s) in vectors.iter().zip(&served) {
        assert!(cosine(v, &s.vector) > 0.99999);
    }
}
