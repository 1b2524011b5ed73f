//! End-to-end tests of intent detection: `confidantctl intents train/eval/predict` on the
//! real default model (in process and through a real confidantd), and the daemon's
//! IntentService loading, serving, swapping and refusing classifier artefacts.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Daemon, model_dir};
use confidant_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::intent_service_client::IntentServiceClient;
use tonic::Code;

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidantctl"))
        .args(args)
        .env_remove("CONFIDANT_ADDR")
        .env_remove("CONFIDANT_MODEL_DIR")
        .output()
        .expect("run confidantctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name)
}

/// The quickstart's demo data: five bank intents and out-of-scope examples.
fn demo_intents() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/demo-intents/bank-intents.csv")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Trains on the fixture with the in-process encoder; returns the JSON summary.
fn train_local(model: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let train = demo_intents();
    let mut args = vec![
        "--json",
        "intents",
        "train",
        "--local",
        "--model-dir",
        s(model),
        "--data",
        s(&train),
        "--out",
        s(out),
        "--text-column",
        "utterance",
        "--label-column",
        "intent",
        "--min-examples",
        "3",
    ];
    args.extend_from_slice(extra);
    let o = ctl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

fn predict_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", stderr(o));
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bad_training_data_is_refused_with_line_numbers() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    let mut rows = String::from("text,label\n");
    for i in 0..6 {
        rows.push_str(&format!("what is my balance {i},balance\n"));
        rows.push_str(&format!("I lost my card {i},lost_card\n"));
    }
    rows.push_str("what is my balance 0,lost_card\n"); // line 14: conflicts with line 2
    rows.push_str(",balance\n"); // line 15: empty text
    rows.push_str("open a mortgage,mortgage\n"); // line 16: a label with one example
    std::fs::write(&bad, rows).unwrap();
    let out = dir.path().join("head");
    let args = [
        "intents",
        "train",
        "--local",
        "--model-dir",
        s(&model),
        "--data",
        s(&bad),
        "--out",
        s(&out),
    ];
    let o = ctl(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("bad.csv:14"), "{err}");
    assert!(err.contains("bad.csv:15"), "{err}");
    assert!(err.contains("mortgage"), "{err}");
    assert!(err.contains("--skip-invalid"), "{err}");
    assert!(!out.exists(), "nothing is written when training is refused");

    // Asked to, it trains without the offending rows, still saying what it dropped.
    let mut skip = args.to_vec();
    skip.extend(["--skip-invalid", "--epochs", "5"]);
    let o = ctl(&skip);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.csv:14"), "{}", stderr(&o));
    assert!(out.join("classifier.toml").is_file());
}

#[test]
fn trains_deterministically_evaluates_and_predicts_out_of_scope() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let first = train_local(&model, &a, &[]);
    let second = train_local(&model, &b, &[]);
    assert_eq!(first["labels"], 5);
    assert_eq!(first["encoder"], "all-MiniLM-L6-v2");
    assert_eq!(
        first["version"], second["version"],
        "same data and seed give the same artefact"
    );
    for f in ["head.safetensors", "lexicon.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let other = train_local(&model, &dir.path().join("c"), &["--seed", "7"]);
    assert_ne!(first["version"], other["version"]);

    let eval = ctl(&[
        "--json",
        "intents",
        "eval",
        "--local",
        "--model-dir",
        s(&model),
        "--classifier",
        s(&a),
        "--data",
        s(&data("intents_eval.jsonl")),
        "--text-column",
        "utterance",
        "--label-column",
        "intent",
    ]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let r: serde_json::Value = serde_json::from_str(stdout(&eval).trim()).unwrap();
    let report = &r["report"];
    assert_eq!(report["examples"], 14);
    assert_eq!(report["out_of_scope_examples"], 4);
    assert!(
        report["in_scope_accuracy"].as_f64().unwrap() >= 0.8,
        "{report}"
    );
    assert!(report["oos_recall"].as_f64().unwrap() >= 0.5, "{report}");
    assert!(report["macro_f1"].as_f64().unwrap() > 0.0);

    let lines = predict_lines(&ctl(&[
        "intents",
        "predict",
        "--local",
        "--model-dir",
        s(&model),
        "--classifier",
        s(&a),
        "--top-k",
        "2",
        "my bank card was stolen yesterday",
        "what will the weather be like in Paris tomorrow",
    ]));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["label"], "lost_card", "{}", lines[0]);
    assert_eq!(lines[0]["out_of_scope"], false);
    assert_eq!(lines[0]["top"].as_array().unwrap().len(), 2);
    let p = lines[0]["probability"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0);
    assert_eq!(lines[1]["out_of_scope"], true, "{}", lines[1]);
    assert!(lines[1]["label"].is_null());

    // A classifier is refused by an encoder other than the one it was trained against.
    let toml = std::fs::read_to_string(a.join("classifier.toml")).unwrap();
    let fp = r#"fingerprint = ""#;
    let at = toml.find(fp).unwrap() + fp.len();
    let mut edited = toml.clone();
    edited.replace_range(at..at + 4, "beef");
    std::fs::write(a.join("classifier.toml"), edited).unwrap();
    let o = ctl(&[
        "intents",
        "predict",
        "--local",
        "--model-dir",
        s(&model),
        "--classifier",
        s(&a),
        "hello",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("retrain"), "{}", stderr(&o));
}

async fn classify(
    d: &Daemon,
    classifier: &str,
    texts: &[&str],
) -> Result<pb::ClassifyResponse, tonic::Status> {
    let mut c = IntentServiceClient::new(d.channel().await);
    c.classify(d.req(pb::ClassifyRequest {
        classifier: classifier.into(),
        texts: texts.iter().map(|t| t.to_string()).collect(),
        top_k: 3,
    }))
    .await
    .map(|r| r.into_inner())
}

/// Two demo intents and a question no bank answers, through the default head.
async fn classify_demo(d: &Daemon) -> pb::ClassifyResponse {
    let r = classify(
        d,
        "intent",
        &[
            "I can't find my debit card",
            "what's my balance",
            "how do I bake sourdough bread",
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.results.len(), 3);
    assert_eq!(r.results[0].label, "lost_card", "{:?}", r.results[0]);
    assert!(!r.results[0].out_of_scope);
    assert_eq!(r.results[1].label, "balance", "{:?}", r.results[1]);
    assert!(r.results[2].out_of_scope, "{:?}", r.results[2]);
    r
}

#[tokio::test]
async fn the_daemon_trains_serves_swaps_and_refuses_classifiers() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let addr = format!("unix:{}", d.socket().display());
    let heads = d.dir.path().join("classifiers");

    // No head yet: NOT_FOUND names it.
    let err = classify(&d, "", &["I lost my card"]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("intent"), "{}", err.message());

    // Train through the daemon (its encoder, its device) into its classifier directory.
    let o = ctl(&[
        "--addr",
        &addr,
        "--json",
        "intents",
        "train",
        "--data",
        s(&demo_intents()),
        "--out",
        s(&heads.join("intent")),
        "--text-column",
        "utterance",
        "--label-column",
        "intent",
        "--min-examples",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trained: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(trained["labels"], 5);
    assert_eq!(trained["encoder"], "all-MiniLM-L6-v2");

    // Served after a reload (the operator's SIGHUP or ReloadModels).
    d.signal("HUP");
    let mut served = None;
    for _ in 0..200 {
        if let Ok(r) = classify(&d, "", &["my card was stolen"]).await {
            served = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = served.expect("the head is served after SIGHUP");
    assert_eq!(r.classifier, "intent");
    assert_eq!(r.version, trained["version"].as_str().unwrap());

    let r = classify_demo(&d).await;
    assert_eq!(r.results[0].top.len(), 3);
    assert_eq!(r.results[2].label, "");
    assert!(r.results[2].oos_score < r.results[2].oos_threshold);

    // Caller mistakes are INVALID_ARGUMENT naming the field; unknown heads NOT_FOUND.
    let err = classify(&d, "intent", &["fine", ""]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("texts[1]"), "{}", err.message());
    let err = classify(&d, "sentiment", &["fine"]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut intents = IntentServiceClient::new(d.channel().await);
    let list = intents
        .list_classifiers(d.req(pb::ListClassifiersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.classifiers.len(), 1);
    let info = &list.classifiers[0];
    assert_eq!(info.name, "intent");
    assert_eq!(info.labels.len(), 5);
    assert!(info.holdout_accuracy > 0.0);

    // Eval through the daemon matches eval in process.
    let eval_args = |via: &[&str]| {
        let mut a: Vec<String> = via.iter().map(|x| x.to_string()).collect();
        a.extend(
            [
                "--json",
                "intents",
                "eval",
                "--classifier",
                s(&heads.join("intent")),
                "--data",
                s(&data("intents_eval.jsonl")),
                "--text-column",
                "utterance",
                "--label-column",
                "intent",
            ]
            .map(String::from),
        );
        a
    };
    let remote = ctl(&eval_args(&["--addr", &addr])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(remote.status.success(), "{}", stderr(&remote));
    let mut local_args = eval_args(&[]);
    local_args.extend(["--local", "--model-dir", s(&model)].map(String::from));
    let local_eval = ctl(&local_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(local_eval.status.success(), "{}", stderr(&local_eval));
    let rv: serde_json::Value = serde_json::from_str(stdout(&remote).trim()).unwrap();
    let lv: serde_json::Value = serde_json::from_str(stdout(&local_eval).trim()).unwrap();
    assert_eq!(rv["report"]["examples"], 14);
    assert_eq!(rv["version"], lv["version"]);
    for v in [&rv, &lv] {
        assert!(
            v["report"]["in_scope_accuracy"].as_f64().unwrap() >= 0.8,
            "{v}"
        );
    }

    // A head trained against another encoder is refused at reload, naming the fix, and
    // the head already loaded keeps serving.
    let rogue = heads.join("rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    for f in [
        "classifier.toml",
        "head.safetensors",
        "lexicon.json",
        "metrics.json",
    ] {
        std::fs::copy(heads.join("intent").join(f), rogue.join(f)).unwrap();
    }
    let toml = std::fs::read_to_string(rogue.join("classifier.toml")).unwrap();
    let fp = r#"fingerprint = ""#;
    let at = toml.find(fp).unwrap() + fp.len();
    let mut edited = toml.clone();
    edited.replace_range(at..at + 4, "beef");
    std::fs::write(rogue.join("classifier.toml"), edited).unwrap();
    let mut admin = AdminServiceClient::new(d.local_channel().await);
    let err = admin
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("retrain"), "{}", err.message());
    assert!(err.message().contains("rogue"), "{}", err.message());
    let r = classify(&d, "intent", &["my card was stolen"])
        .await
        .unwrap();
    assert_eq!(r.results[0].label, "lost_card");
    assert!(classify(&d, "rogue", &["x"]).await.is_err());

    // Removing it lets the reload through.
    std::fs::remove_dir_all(&rogue).unwrap();
    admin
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap();

    let m = d.metrics();
    assert!(
        m.contains(r#"confidant_classifications_total{classifier="intent""#),
        "{m}"
    );
}

#[tokio::test]
async fn a_fine_tuned_head_carries_its_encoder_and_the_daemon_serves_it() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let heads = d.dir.path().join("classifiers");
    let out = heads.join("intent");
    // 75 utterances make 3 batches an epoch: a high rate, so that the encoder moves.
    let ft = [
        "--fine-tune",
        "--fine-tune-epochs",
        "6",
        "--fine-tune-layers",
        "2",
        "--fine-tune-lr",
        "1e-3",
    ];
    // Mistakes are refused before anything is trained or written.
    for (flag, value, says) in [
        ("--fine-tune-epochs", "0", "--fine-tune-epochs"),
        ("--fine-tune-lr", "0", "--fine-tune-lr"),
        ("--fine-tune-layers", "9", "fine_tune_layers"),
        ("--fine-tune-max-cache-mb", "0", "--fine-tune-max-cache-mb"),
    ] {
        let o = ctl(&[
            "intents",
            "train",
            "--local",
            "--model-dir",
            s(&model),
            "--data",
            s(&demo_intents()),
            "--out",
            s(&out),
            "--text-column",
            "utterance",
            "--label-column",
            "intent",
            "--fine-tune",
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(1), "{flag} {value}");
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert!(!out.exists());
    }
    let o = ctl(&[
        "intents",
        "train",
        "--data",
        s(&demo_intents()),
        "--out",
        s(&out),
        "--fine-tune",
    ]);
    assert!(stderr(&o).contains("--local"), "{}", stderr(&o));
    let trained = train_local(&model, &out, &ft);
    assert_eq!(trained["encoder"], "all-MiniLM-L6-v2+intent");
    assert_eq!(trained["fine_tuned"]["layers"], 2);
    assert_eq!(trained["fine_tuned"]["base"]["name"], "all-MiniLM-L6-v2");
    let held = trained["fine_tuned"]["holdout_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&held), "{trained}");
    assert!(out.join("encoder/confidant-model.toml").is_file());
    assert!(out.join("encoder/model.safetensors").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&heads)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    // Same data, same seed: the same encoder and head, byte for byte.
    let again = d.dir.path().join("again");
    let second = train_local(&model, &again, &ft);
    assert_eq!(trained["version"], second["version"]);
    assert_eq!(
        std::fs::read(out.join("encoder/model.safetensors")).unwrap(),
        std::fs::read(again.join("encoder/model.safetensors")).unwrap()
    );

    // eval needs neither --local nor a daemon: the artefact brings its encoder.
    let eval = ctl(&[
        "--json",
        "intents",
        "eval",
        "--classifier",
        s(&out),
        "--data",
        s(&data("intents_eval.jsonl")),
        "--text-column",
        "utterance",
        "--label-column",
        "intent",
    ]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let r: serde_json::Value = serde_json::from_str(stdout(&eval).trim()).unwrap();
    assert!(
        r["report"]["in_scope_accuracy"].as_f64().unwrap() >= 0.8,
        "{r}"
    );

    // The daemon loads it beside its own encoder and classifies through it.
    let mut admin = AdminServiceClient::new(d.local_channel().await);
    admin
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap();
    let r = classify_demo(&d).await;
    assert_eq!(r.version, trained["version"].as_str().unwrap());
    // A training utterance is its own nearest neighbour only through the tuned encoder
    // (the head's memory holds tuned vectors; the served encoder's would sit further off).
    let r = classify(&d, "intent", &["I lost my card"]).await.unwrap();
    assert!(r.results[0].oos_score > 0.9999, "{:?}", r.results[0]);
    let mut intents = IntentServiceClient::new(d.channel().await);
    let list = intents
        .list_classifiers(d.req(pb::ListClassifiersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.classifiers[0].encoder, "all-MiniLM-L6-v2+intent");
    assert!(list.classifiers[0].fine_tuned);
    // The jobs read the same head: routing advice names the intent.
    let mut routing = pb::routing_service_client::RoutingServiceClient::new(d.channel().await);
    let advice = routing
        .route(d.req(pb::RouteRequest {
            contact_id: "ft-1".into(),
            text: "I can't find my debit card".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(advice.intent.unwrap().label, "lost_card");

    // A tampered encoder is refused at reload, naming the file; the loaded head serves on.
    let weights = out.join("encoder/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&weights, bytes).unwrap();
    let err = admin
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("fine-tuned encoder"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("model.safetensors"),
        "{}",
        err.message()
    );
    let r = classify(&d, "intent", &["my card was stolen"])
        .await
        .unwrap();
    assert_eq!(r.results[0].label, "lost_card");
}
