#![allow(clippy::unwrap_used)]

use super::*;

/// How each label is worded (the lexical head's view).
fn wording(label: &str) -> &'static [&'static str] {
    match label {
        "lost_card" => &["I lost my card", "my card was stolen", "card missing"],
        "balance" => &[
            "what is my balance",
            "balance of my account",
            "how much money",
        ],
        "opening_hours" => &["when do you open", "opening hours", "branch hours today"],
        _ => &[
            "weather tomorrow",
            "football scores",
            "pizza recipe",
            "train tickets",
        ],
    }
}

/// Utterance vectors around three "intent" directions, plus out-of-scope inputs in
/// directions no intent uses; `noise` 1.0 and more leaves the vectors nearly useless.
fn data_with(per_label: usize, oos: usize, noise: f32) -> Vec<Example> {
    let mut rng = rng::Rng::new(5);
    let mut out = Vec::new();
    let mut push = |axis: usize, label: &str, rng: &mut rng::Rng| {
        let mut v = [0f32; 16];
        v[axis] = 1.0;
        for x in v.iter_mut() {
            *x += (rng.next_f32() - 0.5) * noise;
        }
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        let words = wording(label);
        let text = format!("{} {}", words[out.len() % words.len()], out.len() % 7);
        out.push(Example {
            text,
            vector: v.iter().map(|a| a / n).collect(),
            label: label.to_string(),
        });
    };
    for _ in 0..per_label {
        push(0, "lost_card", &mut rng);
        push(1, "balance", &mut rng);
        push(2, "opening_hours", &mut rng);
    }
    for i in 0..oos {
        push(8 + i % 8, "out_of_scope", &mut rng);
    }
    out
}

fn data(per_label: usize, oos: usize) -> Vec<Example> {
    data_with(per_label, oos, 0.3)
}

fn encoder() -> EncoderRef {
    EncoderRef {
        name: "test".into(),
        fingerprint: "f".repeat(64),
        dimension: 16,
    }
}

fn opts() -> TrainOptions {
    TrainOptions {
        head: HeadOptions {
            hidden: 32,
            epochs: 15,
            batch_size: 8,
            learning_rate: 1e-2,
            ..Default::default()
        },
        holdout: 0.2,
        ..Default::default()
    }
}

fn vec_on(axis: usize) -> Vec<f32> {
    let mut v = vec![0f32; 16];
    v[axis] = 1.0;
    v
}

#[test]
fn trains_calibrates_and_flags_out_of_scope() {
    let (mut fits, mut refits) = (0, 0);
    let c = train(&data(30, 0), encoder(), &opts(), &mut |r| {
        if r.refit {
            refits += 1;
        } else {
            fits += 1;
        }
    })
    .unwrap();
    assert_eq!((fits, refits), (15, 15));
    assert_eq!(c.labels(), ["balance", "lost_card", "opening_hours"]);
    let m = c.metrics().unwrap();
    assert_eq!(m.threshold_source, "held-out coverage");
    assert_eq!(m.train_examples + m.holdout_examples, 90);
    assert_eq!(m.refit_examples, 90, "the served head saw every example");
    let memory = c.memory.as_ref().unwrap().tensor().dims2().unwrap();
    assert_eq!(
        memory.0, 90,
        "every in-scope vector is in the nearest-neighbour memory"
    );
    assert!(m.holdout.closed_set_accuracy > 0.95, "{m:?}");
    let p = c
        .predict(
            &["card missing", "pizza recipe"],
            &[vec_on(0), vec_on(12)],
            2,
        )
        .unwrap();
    assert_eq!(p[0].top[0].0, "lost_card");
    assert_eq!(p[0].top.len(), 2);
    assert!(!p[0].out_of_scope);
    assert!(p[1].out_of_scope, "a direction no intent uses: {:?}", p[1]);
    let sum: f32 = p[0].top.iter().map(|t| t.1).sum();
    assert!(sum <= 1.0 + 1e-5);
}

#[test]
fn without_refit_the_served_head_is_the_calibrated_one() {
    let o = TrainOptions {
        refit: false,
        ..opts()
    };
    let mut epochs = 0;
    let c = train(&data(30, 0), encoder(), &o, &mut |_| epochs += 1).unwrap();
    assert_eq!(epochs, 15);
    let m = c.metrics().unwrap();
    assert_eq!(m.refit_examples, 0);
    assert_eq!(
        c.memory.as_ref().unwrap().tensor().dims2().unwrap().0,
        m.train_examples
    );
}

#[test]
fn out_of_scope_examples_become_a_reject_class_and_set_the_threshold() {
    let c = train(&data(30, 40), encoder(), &opts(), &mut |_| {}).unwrap();
    let m = c.metrics().unwrap();
    assert_eq!(m.threshold_source, "held-out out-of-scope examples");
    assert_eq!(m.out_of_scope_examples, 40);
    assert!(m.holdout.oos_recall.unwrap() > 0.9, "{m:?}");
    assert!(!c.labels().iter().any(|l| l == "out_of_scope"));
    let p = c
        .predict(
            &["football scores", "how much money"],
            &[vec_on(9), vec_on(1)],
            1,
        )
        .unwrap();
    assert!(p[0].out_of_scope);
    assert!(!p[1].out_of_scope);
    assert_eq!(p[1].top[0].0, "balance");
}

#[test]
fn artefact_round_trips_and_refuses_tampering_or_another_encoder() {
    let mut c = train(&data(20, 0), encoder(), &opts(), &mut |_| {}).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("intents");
    c.save(&dir).unwrap();
    // Saving again over it replaces it whole.
    c.save(&dir).unwrap();
    let back = Classifier::load_for(&dir, &"f".repeat(64)).unwrap();
    assert_eq!(back.labels(), c.labels());
    assert_eq!(back.version().len(), 12);
    assert_eq!(
        back.version(),
        c.version(),
        "save reports the version it wrote"
    );
    assert!(back.metrics().is_some());
    let x = vec![vec_on(2), vec_on(13)];
    let t = ["opening hours", "train tickets"];
    let a = c.predict(&t, &x, 3).unwrap();
    let b = back.predict(&t, &x, 3).unwrap();
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.top, b.top, "the same probabilities after a round trip");
        assert_eq!(a.out_of_scope, b.out_of_scope);
    }
    let err = Classifier::load_for(&dir, &"0".repeat(64)).unwrap_err();
    assert!(
        matches!(err, ClassifierError::EncoderMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("retrain"));
    // Operator edits the threshold: allowed.
    let toml = std::fs::read_to_string(dir.join(CLASSIFIER_FILE)).unwrap();
    let edited = toml
        .lines()
        .map(|l| {
            if l.starts_with("threshold") {
                "threshold = 0.99".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join(CLASSIFIER_FILE), edited).unwrap();
    assert_eq!(Classifier::load(&dir).unwrap().oos_threshold(), 0.99);
    // Weights changed behind the manifest's back: refused.
    let mut bytes = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(dir.join(WEIGHTS_FILE), bytes).unwrap();
    let err = Classifier::load(&dir).unwrap_err();
    assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
}

#[test]
fn a_changed_lexicon_is_refused() {
    let mut c = train(&data(20, 0), encoder(), &opts(), &mut |_| {}).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("intents");
    c.save(&dir).unwrap();
    let path = dir.join(LEXICON_FILE);
    let lexicon = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, lexicon.replacen("w:card", "w:cart", 1)).unwrap();
    let err = Classifier::load(&dir).unwrap_err();
    assert!(
        err.to_string().contains("lexicon.json: SHA-256 mismatch"),
        "{err}"
    );
}

#[test]
fn the_lexical_head_carries_what_the_vectors_miss() {
    // Vectors drowned in noise: only the wording tells the labels apart.
    let noisy = data_with(40, 0, 6.0);
    let vectors_only = TrainOptions {
        lexical: None,
        ..opts()
    };
    let without = train(&noisy, encoder(), &vectors_only, &mut |_| {}).unwrap();
    let with = train(&noisy, encoder(), &opts(), &mut |_| {}).unwrap();
    let m = with.metrics().unwrap();
    assert!(m.lexical_weight.unwrap() > 0.0, "{m:?}");
    assert!(m.lexical_head_accuracy.unwrap() > 0.95, "{m:?}");
    let acc = |c: &Classifier| c.metrics().unwrap().holdout.closed_set_accuracy;
    assert!(
        acc(&with) > acc(&without) + 0.2,
        "with {} without {}",
        acc(&with),
        acc(&without)
    );
    assert!(without.metrics().unwrap().lexical_weight.is_none());
    // A vector that points at no intent: the wording decides.
    let neutral = vec![0.25f32; 16];
    let p = with
        .predict(&["my card was stolen"], &[neutral], 1)
        .unwrap();
    assert_eq!(p[0].top[0].0, "lost_card");
}

#[test]
fn wrong_dimensions_and_too_few_labels_are_errors() {
    let c = train(&data(10, 0), encoder(), &opts(), &mut |_| {}).unwrap();
    let err = c.predict(&["balance"], &[vec![0.0; 3]], 1).unwrap_err();
    assert!(err.to_string().contains("vectors[0]"), "{err}");
    let err = c.predict(&[], &[vec_on(1)], 1).unwrap_err();
    assert!(err.to_string().contains("texts"), "{err}");
    let one_label: Vec<_> = data(10, 0)
        .into_iter()
        .filter(|e| e.label == "balance")
        .collect();
    assert!(train(&one_label, encoder(), &opts(), &mut |_| {}).is_err());
}

#[test]
fn a_lexical_head_that_adds_nothing_is_dropped() {
    // Wording drawn at random from every label's phrases: it misleads, only the vectors
    // tell the labels apart.
    let mut rng = rng::Rng::new(11);
    let labels = ["lost_card", "balance", "opening_hours"];
    let same: Vec<Example> = data(30, 0)
        .into_iter()
        .map(|e| {
            let words = wording(labels[(rng.next_f32() * 3.0) as usize % 3]);
            Example {
                text: words[(rng.next_f32() * 3.0) as usize % 3].into(),
                ..e
            }
        })
        .collect();
    let mut c = train(&same, encoder(), &opts(), &mut |_| {}).unwrap();
    assert_eq!(c.metrics().unwrap().lexical_weight, Some(0.0));
    assert!(c.lexical.is_none());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("intents");
    c.save(&dir).unwrap();
    assert!(!dir.join(LEXICON_FILE).exists());
    let back = Classifier::load(&dir).unwrap();
    let p = back.predict(&["card missing"], &[vec_on(1)], 1).unwrap();
    assert_eq!(p[0].top[0].0, "balance");
}

/// A model directory with one file and a manifest listing it (enough for the artefact's
/// fingerprint check; the files' sums are the model loader's to verify).
fn fake_encoder(dir: &Path) -> crate::Manifest {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let sum = crate::sha256_file(&dir.join("config.json")).unwrap();
    let text = format!(
        "[model]\nname = \"test+intent\"\narchitecture = \"bert\"\nmax_seq_length = 16\ndimension = 16\n\n[files]\n\"config.json\" = \"{sum}\"\n"
    );
    std::fs::write(dir.join(crate::MANIFEST_FILE), text).unwrap();
    crate::Manifest::read(dir).unwrap()
}

#[test]
fn a_fine_tuned_encoder_travels_with_the_artefact_and_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let staged = tmp.path().join(".encoder");
    let manifest = fake_encoder(&staged);
    let tuned = EncoderRef {
        name: "test+intent".into(),
        fingerprint: manifest.fingerprint(),
        dimension: 16,
    };
    let mut c = train(&data(12, 0), tuned, &opts(), &mut |_| {}).unwrap();
    let how = FineTuned {
        base: encoder(),
        layers: 2,
        epochs: 1,
        examples: 29,
        seconds: 1.0,
        holdout_accuracy: Some(0.9),
    };
    c.attach_encoder(staged.clone(), how.clone());
    let a = tmp.path().join("a");
    c.save(&a).unwrap();
    assert!(!staged.exists(), "moved into the artefact");
    assert_eq!(c.encoder_dir(), Some(a.join(ENCODER_DIR).as_path()));

    // Loaded, it points at its own encoder and is not held to the served one.
    let loaded = Classifier::load_for(&a, &"0".repeat(64)).unwrap();
    assert_eq!(loaded.encoder_dir(), Some(a.join(ENCODER_DIR).as_path()));
    assert_eq!(loaded.fine_tuned(), Some(&how));
    // Saved again elsewhere, the encoder is copied along.
    let mut again = loaded.clone();
    let b = tmp.path().join("b");
    again.save(&b).unwrap();
    assert!(b.join(ENCODER_DIR).join("config.json").is_file());
    assert!(a.join(ENCODER_DIR).join("config.json").is_file());

    // Another encoder in its place is refused, naming it.
    std::fs::write(a.join(ENCODER_DIR).join(crate::MANIFEST_FILE), "[model]\n").unwrap();
    let err = Classifier::load(&a).unwrap_err().to_string();
    assert!(err.contains("encoder/"), "{err}");
    let other = tmp.path().join("other");
    fake_encoder(&other);
    std::fs::write(other.join("config.json"), "{\"layers\": 3}").unwrap();
    let text = std::fs::read_to_string(other.join(crate::MANIFEST_FILE)).unwrap();
    let sum = crate::sha256_file(&other.join("config.json")).unwrap();
    let text = text.replace(&text[text.len() - 66..text.len() - 2], &sum);
    std::fs::write(b.join(ENCODER_DIR).join(crate::MANIFEST_FILE), text).unwrap();
    let err = Classifier::load(&b).unwrap_err().to_string();
    assert!(
        err.contains("is not the encoder the head was trained on"),
        "{err}"
    );
}

#[test]
fn a_few_rows_are_classified_as_a_batch_of_many_is() {
    // A bot answer classifies one vector (plain loops), an evaluation thousands (Candle):
    // the two paths must agree, including the reject class and the nearest-neighbour score.
    let c = train(&data(30, 40), encoder(), &opts(), &mut |_| {}).unwrap();
    assert_eq!(c.oos_score(), OosScore::Nearest);
    let examples = data_with(6, 8, 0.6);
    assert!(examples.len() > few::MAX_ROWS);
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors: Vec<Vec<f32>> = examples.iter().map(|e| e.vector.clone()).collect();
    let many = c.predict(&texts, &vectors, 3).unwrap();
    assert_eq!(many.len(), examples.len());
    let mut flagged = 0;
    for (i, want) in many.iter().enumerate() {
        let got = c.predict(&texts[i..=i], &vectors[i..=i], 3).unwrap();
        let got = &got[0];
        assert_eq!(got.out_of_scope, want.out_of_scope, "row {i}");
        assert!((got.oos_score - want.oos_score).abs() < 1e-5, "row {i}");
        assert_eq!(got.top.len(), want.top.len());
        for ((gl, gp), (wl, wp)) in got.top.iter().zip(&want.top) {
            assert_eq!(gl, wl, "row {i}");
            assert!((gp - wp).abs() < 1e-5, "row {i}: {gp} vs {wp}");
        }
        flagged += usize::from(want.out_of_scope);
    }
    assert!(flagged > 0 && flagged < many.len(), "{flagged} flagged");
}
