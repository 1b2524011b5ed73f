//! End-to-end tests of confidantctl: offline commands on the real default model, and
//! daemon commands against a real confidantd over its Unix socket.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::process::{Command, Output};

use common::{Daemon, cosine, model_dir, reference};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidantctl"))
        .args(args)
        .env_remove("CONFIDANT_ADDR")
        .output()
        .expect("run confidantctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn models_verify_accepts_the_default_model_and_names_a_tampered_file() {
    let Some(model) = model_dir() else { return };
    let ok = ctl(&["models", "verify", model.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout(&ok).starts_with("OK  all-MiniLM-L6-v2"),
        "{}",
        stdout(&ok)
    );

    let copy = tempfile::tempdir().unwrap();
    for f in ["confidant-model.toml", "config.json", "tokenizer.json"] {
        std::fs::copy(model.join(f), copy.path().join(f)).unwrap();
    }
    let bad = ctl(&["models", "verify", copy.path().to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("missing"), "{err}");

    std::fs::copy(
        model.join("tokenizer.json"),
        copy.path().join("model.safetensors"),
    )
    .unwrap();
    let tampered = ctl(&["models", "verify", "--json", copy.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&tampered.stderr);
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        err.contains("1_Pooling/config.json") || err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn embed_prints_one_json_line_per_text_matching_the_reference() {
    let Some(model) = model_dir() else { return };
    let refs = reference();
    let mut args = vec!["embed", "--model-dir", model.to_str().unwrap()];
    args.extend(refs.iter().map(|(t, _)| t.as_str()));
    let out = ctl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), refs.len());
    for (line, (text, want)) in lines.iter().zip(&refs) {
        assert_eq!(line["text"], text.as_str());
        assert_eq!(line["truncated"], false);
        let got: Vec<f32> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert!(cosine(&got, want) >= 0.9999);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_and_models_over_the_unix_socket() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start_with_env(&model, "", &[("CONFIDANT__INFERENCE__WORKERS", "3")]).await;
    let addr = format!("unix:{}", d.socket().display());
    let status = ctl(&["--addr", &addr, "--json", "status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    assert_eq!(v["models"][0]["name"], "all-MiniLM-L6-v2");
    assert_eq!(v["queue"]["worker_alive"], true);
    assert_eq!(v["queue"]["workers"], 3);

    let health = ctl(&["--addr", &addr, "health"]);
    assert!(health.status.success());
    assert_eq!(stdout(&health).trim(), "SERVING");

    let no_token = ctl(&["--addr", &d.addr, "models", "list"]);
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("authorization"));
    let table = ctl(&["--addr", &d.addr, "--token", &d.token, "models", "list"]);
    assert!(table.status.success());
    assert!(
        stdout(&table).contains("all-MiniLM-L6-v2"),
        "{}",
        stdout(&table)
    );

    let reload = ctl(&["--addr", &addr, "models", "reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
}

#[test]
fn unreachable_daemon_exits_2() {
    let port = common::free_port();
    let out = ctl(&["--addr", &format!("http://127.0.0.1:{port}"), "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_audit_from_the_cli() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let addr = format!("unix:{}", d.socket().display());
    let created = ctl(&[
        "--addr", &addr, "--json", "tokens", "create", "--role", "bot,qa", "--tenant", "bank9",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&created).trim()).unwrap();
    let (id, secret) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    assert!(secret.starts_with("cfd_"));
    assert_eq!(v["roles"], serde_json::json!(["bot", "qa"]));

    // The token file works for TCP calls; a bot token cannot list tokens (exit 1).
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let denied = ctl(&[
        "--addr",
        &d.addr,
        "--token-file",
        file.to_str().unwrap(),
        "tokens",
        "list",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("admin"));

    let list = ctl(&["--addr", &addr, "tokens", "list", "--tenant", "bank9"]);
    assert!(list.status.success());
    let out = stdout(&list);
    assert!(out.contains(&id) && out.contains("bot,qa"), "{out}");
    assert!(!out.contains(&secret), "a secret was listed");

    let revoke = ctl(&["--addr", &addr, "tokens", "revoke", &id]);
    assert!(revoke.status.success());
    let missing = ctl(&["--addr", &addr, "tokens", "revoke", "nope"]);
    assert_eq!(missing.status.code(), Some(1));

    let audit = ctl(&["--addr", &addr, "--json", "audit", "--tenant", "bank9"]);
    assert!(audit.status.success());
    let actions: Vec<String> = stdout(&audit)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, vec!["token.revoke", "token.create"]);
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate.
fn make_pki(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Confidant test CA",
        ],
    );
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "agent-desktop", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let Some(model) = model_dir() else { return };
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).display().to_string();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));

    // TLS: the CLI verifies the daemon with the site CA; plain TCP no longer answers.
    let d = Daemon::start_with_env(
        &model,
        "",
        &[
            ("CONFIDANT__SERVER__TLS_CERT", &cert),
            ("CONFIDANT__SERVER__TLS_KEY", &key),
        ],
    )
    .await;
    let https = format!("https://localhost:{}", d.port);
    let ok = ctl(&["--addr", &https, "--ca", &ca, "--token", &d.token, "health"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let status = ctl(&[
        "--addr", &https, "--ca", &ca, "--token", &d.token, "--json", "status",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let plain = ctl(&["--addr", &d.addr, "--token", &d.token, "status"]);
    assert!(!plain.status.success());
    let untrusted = ctl(&["--addr", &https, "--token", &d.token, "status"]);
    assert!(!untrusted.status.success());
    drop(d);

    // mTLS: a client without a certificate signed by the client CA is refused.
    let d = Daemon::start_with_env(
        &model,
        "",
        &[
            ("CONFIDANT__SERVER__TLS_CERT", &cert),
            ("CONFIDANT__SERVER__TLS_KEY", &key),
            ("CONFIDANT__SERVER__TLS_CLIENT_CA", &ca),
        ],
    )
    .await;
    let https = format!("https://localhost:{}", d.port);
    let anonymous = ctl(&["--addr", &https, "--ca", &ca, "--token", &d.token, "status"]);
    assert!(!anonymous.status.success());
    let (ccert, ckey) = (p("client.pem"), p("client.key"));
    let with_cert = ctl(&[
        "--addr",
        &https,
        "--ca",
        &ca,
        "--client-cert",
        &ccert,
        "--client-key",
        &ckey,
        "--token",
        &d.token,
        "status",
    ]);
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kb_import_search_export_from_the_cli() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let addr = format!("unix:{}", d.socket().display());
    let kb = |args: &[&str]| {
        let mut all = vec!["--addr", addr.as_str(), "kb", "--tenant", "t1"];
        all.extend_from_slice(args);
        ctl(&all)
    };
    let files = tempfile::tempdir().unwrap();
    let p = |name: &str| files.path().join(name).to_str().unwrap().to_string();
    std::fs::write(
        p("kb.jsonl"),
        concat!(
            r#"{"id":"card-lost","lang":"en","questions":["I lost my credit card"],"answer":"Call 0800 123 456."}"#,
            "\n",
            r#"{"id":"pin","lang":"en","questions":["I forgot my PIN"],"answer":""}"#,
            "\n",
            r#"{"id":"fees","lang":"en","questions":["What does a SWIFT transfer cost?"],"answer":"15 EUR."}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::write(
        p("faq.csv"),
        "question,answer\nHow do I open an account?,\"In the app, with your ID.\"\n",
    )
    .unwrap();
    std::fs::create_dir(p("md")).unwrap();
    std::fs::write(
        p("md/mortgage.md"),
        "---\nlang: en\nquestions: [What are your mortgage rates?]\n---\n# Mortgages\n\nSee Loans > Mortgages on our website.\n",
    )
    .unwrap();

    // One bad line rejects the whole import, naming the file, the line and the field.
    let rejected = kb(&["import", &p("kb.jsonl"), &p("faq.csv"), &p("md")]);
    assert_eq!(rejected.status.code(), Some(1), "{}", stderr(&rejected));
    assert!(
        stderr(&rejected).contains("kb.jsonl:2: answer: must not be empty"),
        "{}",
        stderr(&rejected)
    );
    let stats = kb(&["--json", "stats"]);
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(s["published"], 0, "nothing written");
    // --dry-run validates only.
    let no_lang = kb(&["import", "--dry-run", &p("faq.csv")]);
    assert_eq!(no_lang.status.code(), Some(1));
    assert!(
        stderr(&no_lang).contains("faq.csv:2: lang:"),
        "{}",
        stderr(&no_lang)
    );
    let dry = kb(&["import", "--dry-run", "--lang", "en", &p("faq.csv")]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("1 valid"), "{}", stdout(&dry));
    // --skip-invalid imports the rest.
    let ok = kb(&[
        "import",
        "--skip-invalid",
        "--lang",
        "en",
        &p("kb.jsonl"),
        &p("faq.csv"),
        &p("md"),
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("4 created, 0 updated, 0 unchanged, 1 skipped"),
        "{}",
        stdout(&ok)
    );

    let found = kb(&["--json", "search", "someone stole my credit card"]);
    let hits: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(hits[0]["article_id"], "card-lost", "{hits}");
    let found = kb(&["--json", "search", "home loan interest"]);
    let hits: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(hits[0]["article_id"], "mortgage", "{hits}");
    let table = kb(&["search", "SWIFT", "--mode", "lexical"]);
    assert!(
        stdout(&table).lines().nth(1).unwrap().contains("fees"),
        "{}",
        stdout(&table)
    );

    // Export, then re-import: the same state, nothing changes.
    let out = p("export.jsonl");
    let exported = kb(&["export", "-o", &out]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 4);
    let again = kb(&["import", &out]);
    assert!(
        stdout(&again).contains("0 created, 0 updated, 4 unchanged"),
        "{}",
        stdout(&again)
    );

    let show = kb(&["--json", "show", "mortgage"]);
    let a: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(a["title"], "Mortgages");
    assert_eq!(a["version"], 1);
    let del = kb(&["delete", "mortgage"]);
    assert!(del.status.success(), "{}", stderr(&del));
    let gone = kb(&["show", "mortgage"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));

    // The evaluation command reports per-mode recall over labelled queries.
    std::fs::write(
        p("queries.jsonl"),
        "{\"query\":\"my card was stolen\",\"expected\":[\"card-lost\"]}\n{\"query\":\"open a new account\",\"expected\":\"faq-\"}\n",
    )
    .unwrap();
    let eval = kb(&["--json", "eval", "--queries", &p("queries.jsonl")]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let e: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(e.as_array().unwrap().len(), 3);
    for mode in e.as_array().unwrap() {
        assert_eq!(mode["queries"], 2);
        assert!(mode["recall_at_5"].as_f64().unwrap() >= 0.5, "{mode}");
    }
}
