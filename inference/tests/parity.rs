//! Parity with sentence-transformers on the real default model: token ids must match
//! exactly and each embedding must have cosine ≥ 0.9999 with the reference vector
//! (`data/reference.json`, copied from shared/reference).
//!
//! Needs the default model (`models/install-default`). CI installs it first, so there a
//! missing model fails the test; elsewhere the test says loudly that it skipped.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use confidant_inference::{Batcher, BatcherConfig, EmbeddingModel, InputKind, LoadOptions};
use serde_json::Value;

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CONFIDANT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2")
        });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "default model missing at {} in CI: run models/install-default",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: default model not installed at {} (run models/install-default)",
        dir.display()
    );
    None
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let text = include_str!("data/reference.json");
    let v: Value = serde_json::from_str(text).unwrap();
    v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Case {
            text: s["text"].as_str().unwrap().to_string(),
            ids: s["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            embedding: s["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

#[test]
fn token_ids_and_embeddings_match_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let model = EmbeddingModel::load(&dir, &LoadOptions::default()).unwrap();
    let cases = reference();
    for c in &cases {
        let enc = model.tokenize(&c.text, InputKind::Query).unwrap();
        assert_eq!(enc.ids, c.ids, "token ids for {:?}", c.text);
        assert!(!enc.truncated);
    }
    // All four in one padded batch: pooling must honour the attention mask.
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batch = model.embed(&texts, InputKind::Query).unwrap();
    for (c, e) in cases.iter().zip(&batch) {
        let cos = cosine(&e.vector, &c.embedding);
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", c.text);
        assert_eq!(e.vector.len(), 384);
    }
    // And one at a time (no padding at all) gives the same.
    for c in &cases {
        let single = model.embed(&[&c.text], InputKind::Query).unwrap();
        let cos = cosine(&single[0].vector, &c.embedding);
        assert!(cos >= 0.9999, "unbatched cosine {cos} for {:?}", c.text);
    }
}

/// Texts of many lengths, so batches span several 32-row blocks, threads and paddings.
fn varied_texts() -> Vec<String> {
    let words = "my card was declined at the shop yesterday and I need to know why because \
                 the balance looks fine in the app although a transfer is still pending";
    let words: Vec<&str> = words.split_whitespace().collect();
    (1..=40)
        .map(|n| {
            words
                .iter()
                .cycle()
                .skip(n)
                .take(n)
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn the_native_encoder_matches_candles() {
    let Some(dir) = model_dir() else { return };
    let native = EmbeddingModel::load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(native.engine(), "native-f32");
    let candle = EmbeddingModel::load(
        &dir,
        &LoadOptions {
            candle: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(candle.engine(), "candle");
    let texts = varied_texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let a = native.embed(&texts, InputKind::Query).unwrap();
    let b = candle.embed(&texts, InputKind::Query).unwrap();
    for ((x, y), t) in a.iter().zip(&b).zip(&texts) {
        let cos = cosine(&x.vector, &y.vector);
        assert!(cos >= 0.99999, "cosine {cos} for {t:?}");
        assert_eq!(x.tokens, y.tokens);
    }
}

#[test]
fn native_bf16_keeps_cosine_0_999_with_f32() {
    let Some(dir) = model_dir() else { return };
    // AMX where the CPU has it, else AVX-512-BF16; each kernel is also unit-tested alone.
    let expected = if confidant_inference::amx_available() {
        "native-amx-bf16"
    } else if confidant_inference::avx512_bf16_available() {
        "native-avx512-bf16"
    } else {
        eprintln!(
            "SKIPPED native_bf16_keeps_cosine_0_999_with_f32: this CPU has neither AMX-BF16 \
             nor AVX-512-BF16"
        );
        return;
    };
    keeps_cosine_0_999_with_f32(&dir, "bf16", expected);
}

#[test]
fn native_int8_keeps_cosine_0_999_with_f32() {
    let Some(dir) = model_dir() else { return };
    // AVX-512-VNNI where the CPU has it, else AVX2 (7-bit weights); both kernels are also
    // unit-tested alone.
    let Some(expected) = confidant_inference::int8_engine() else {
        eprintln!(
            "SKIPPED native_int8_keeps_cosine_0_999_with_f32: this CPU has neither AVX2 nor \
             AVX-512-VNNI"
        );
        return;
    };
    keeps_cosine_0_999_with_f32(&dir, "int8", expected);
}

/// The reference sentences and varied texts under `dtype` stay within cosine 0.999 of
/// sentence-transformers and of our f32 path.
fn keeps_cosine_0_999_with_f32(dir: &Path, dtype: &str, expected: &str) {
    let opts = LoadOptions {
        dtype: Some(dtype.into()),
        ..Default::default()
    };
    let low = EmbeddingModel::load(dir, &opts).unwrap();
    assert_eq!(low.engine(), expected);
    for c in &reference() {
        let e = low.embed(&[&c.text], InputKind::Query).unwrap();
        let cos = cosine(&e[0].vector, &c.embedding);
        assert!(cos >= 0.999, "cosine {cos} for {:?}", c.text);
    }
    let f32 = EmbeddingModel::load(dir, &LoadOptions::default()).unwrap();
    let texts = varied_texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let a = low.embed(&texts, InputKind::Query).unwrap();
    let b = f32.embed(&texts, InputKind::Query).unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| cosine(&x.vector, &y.vector))
        .fold(1.0, f64::min);
    eprintln!(
        "{expected} vs f32: lowest cosine {worst:.6} over {} texts",
        texts.len()
    );
    assert!(worst >= 0.999, "lowest cosine {worst}");
}

/// One text per pass (a lone caller's) is shared by outputs over kept threads at f32 on
/// `gemm` (and on the packed kernel with `share_lone_texts`), a long text by rows: every
/// thread count gives one text the same vector, at f32 and at int8 (which does not share
/// a short text).
#[test]
fn one_text_gets_the_same_vector_on_any_number_of_threads() {
    let Some(dir) = model_dir() else { return };
    let mut runs = vec![("f32", false), ("f32", true)];
    if confidant_inference::int8_engine().is_some() {
        runs.push(("int8", false));
    } else {
        eprintln!("SKIPPED the int8 half: this CPU has neither AVX2 nor AVX-512-VNNI");
    }
    for (dtype, share_lone_texts) in runs {
        let opts = LoadOptions {
            dtype: Some(dtype.into()),
            share_lone_texts,
            ..Default::default()
        };
        let model = EmbeddingModel::load(&dir, &opts).unwrap();
        for text in varied_texts().iter().step_by(7) {
            let enc = model.tokenize(text, InputKind::Query).unwrap();
            let one = model.forward_threads(&[&enc], 1).unwrap();
            for threads in [2, 3, 5] {
                let many = model.forward_threads(&[&enc], threads).unwrap();
                let worst = one[0]
                    .iter()
                    .zip(&many[0])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // Each output is the same sum on any thread; gemm may block k differently
                // for fewer columns, hence not bit for bit at f32.
                assert!(
                    worst <= 1e-5,
                    "{dtype} (shared: {share_lone_texts}), {threads} threads: {worst} off for {text:?}"
                );
            }
        }
    }
}

#[test]
fn long_inputs_are_truncated_at_256_and_say_so() {
    let Some(dir) = model_dir() else { return };
    let model = EmbeddingModel::load(&dir, &LoadOptions::default()).unwrap();
    let long = "account balance ".repeat(300);
    let out = model.embed(&[&long, "short"], InputKind::Query).unwrap();
    assert_eq!(out[0].tokens, 256);
    assert!(out[0].truncated);
    assert!(!out[1].truncated);
    assert!(model.embed(&["   "], InputKind::Query).is_err());
}

#[test]
fn tampered_model_is_refused_naming_the_file() {
    let Some(dir) = model_dir() else { return };
    let copy = tempfile::tempdir().unwrap();
    for entry in [
        "confidant-model.toml",
        "config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        std::fs::copy(dir.join(entry), copy.path().join(entry)).unwrap();
    }
    // Keep the manifest consistent with the copied subset, then tamper with one file.
    let manifest = std::fs::read_to_string(copy.path().join("confidant-model.toml")).unwrap();
    let kept: String = manifest
        .lines()
        .filter(|l| {
            !l.starts_with('"')
                || [
                    "\"config.json\"",
                    "\"tokenizer.json\"",
                    "\"model.safetensors\"",
                ]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(copy.path().join("confidant-model.toml"), kept).unwrap();
    EmbeddingModel::load(copy.path(), &LoadOptions::default()).unwrap();
    let mut cfg = std::fs::read_to_string(copy.path().join("config.json")).unwrap();
    cfg.push(' ');
    std::fs::write(copy.path().join("config.json"), cfg).unwrap();
    let err = EmbeddingModel::load(copy.path(), &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batcher_answers_concurrent_callers_with_reference_vectors() {
    let Some(dir) = model_dir() else { return };
    let model = std::sync::Arc::new(EmbeddingModel::load(&dir, &LoadOptions::default()).unwrap());
    // Two workers, so that batches also run side by side on one thread each.
    let config = BatcherConfig {
        workers: 2,
        threads: 2,
        ..BatcherConfig::default()
    };
    let batcher = std::sync::Arc::new(Batcher::new(model, config).unwrap());
    let cases = std::sync::Arc::new(reference());
    let mut tasks = Vec::new();
    for round in 0..32 {
        let (b, cases) = (batcher.clone(), cases.clone());
        tasks.push(tokio::spawn(async move {
            let c = &cases[round % cases.len()];
            let out = b
                .embed(std::slice::from_ref(&c.text), InputKind::Query)
                .await
                .unwrap();
            assert!(cosine(&out[0].vector, &c.embedding) >= 0.9999);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
