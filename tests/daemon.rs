//! End-to-end: the real confidantd process over real gRPC — health, reflection, embeddings,
//! input errors, overload, the systemd notify sequence, SIGHUP reload with a broken model,
//! SIGTERM drain, config validation and the Unix socket.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, cosine, model_dir, reference};
use confidant_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::embedding_service_client::EmbeddingServiceClient;
use tonic::Code;

fn embed_request(texts: &[&str]) -> pb::EmbedRequest {
    pb::EmbedRequest {
        texts: texts.iter().map(|t| t.to_string()).collect(),
        kind: pb::InputKind::Query as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeds_over_grpc_with_reference_parity_and_clear_errors() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(
        &model,
        "[limits]\nmax_texts_per_request = 8\nmax_text_chars = 500\n",
    )
    .await;
    let mut c = EmbeddingServiceClient::new(d.channel().await);
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|(t, _)| t.as_str()).collect();
    let r = c
        .embed(d.req(embed_request(&texts)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model, "all-MiniLM-L6-v2");
    assert_eq!(r.dimension, 384);
    assert_eq!(r.embeddings.len(), refs.len());
    for ((t, want), got) in refs.iter().zip(&r.embeddings) {
        let cos = cosine(&got.vector, want);
        assert!(cos >= 0.9999, "cosine {cos} for {t:?}");
        assert!(!got.truncated);
    }

    let err = c
        .embed(d.req(embed_request(&["fine", "  "])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("texts[1]"), "{}", err.message());
    let err = c.embed(d.req(embed_request(&[]))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c.embed(d.req(embed_request(&["x"; 9]))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit of 8"), "{}", err.message());
    let long = "a".repeat(501);
    let err = c
        .embed(d.req(embed_request(&["ok", &long])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("texts[1]"), "{}", err.message());
    let err = c
        .embed(d.req(pb::EmbedRequest {
            texts: vec!["x".into()],
            kind: 42,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("kind"));

    // The daemon is still fine after the bad calls.
    assert!(
        c.embed(d.req(embed_request(&["still serving"])))
            .await
            .is_ok()
    );
    // Customer text never reaches the log.
    assert!(!d.log_text().contains("online banking password"));

    // Prometheus sees the calls, by method and code, and the inference internals.
    let m = d.metrics();
    for want in [
        "confidant_rpc_calls_total{method=\"Embed\",code=\"Ok\"}",
        "confidant_rpc_calls_total{method=\"Embed\",code=\"InvalidArgument\"}",
        "confidant_rpc_seconds_bucket{method=\"Embed\"",
        "confidant_inference_batch_size_bucket",
        "confidant_inference_seconds_bucket",
        "confidant_model_load_seconds",
    ] {
        assert!(m.contains(want), "{want} missing from metrics:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_dtype_int8_is_served_within_cosine_0_999_and_logged() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start_with_env(&model, "", &[("CONFIDANT__MODEL__DTYPE", "int8")]).await;
    let mut c = EmbeddingServiceClient::new(d.channel().await);
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|(t, _)| t.as_str()).collect();
    let r = c
        .embed(d.req(embed_request(&texts)))
        .await
        .unwrap()
        .into_inner();
    for ((t, want), got) in refs.iter().zip(&r.embeddings) {
        let cos = cosine(&got.vector, want);
        assert!(cos >= 0.999, "cosine {cos} for {t:?}");
    }
    let log = d.log_text();
    if let Some(engine) = confidant_inference::int8_engine() {
        assert!(log.contains(engine), "engine not logged: {log}");
    } else {
        // Without AVX2 or VNNI the daemon says so and serves f32.
        eprintln!("int8 unavailable here: checking the f32 fallback instead");
        assert!(
            log.contains("AVX-512-VNNI") && log.contains("native-f32"),
            "{log}"
        );
    }
}

/// `inference.share_lone_texts`: each lone text's layers, shared with a kept thread (on the
/// packed f32 kernel too), still give the reference vectors over gRPC, and the kept thread
/// is there to share them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_texts_shared_with_a_kept_thread_keep_reference_parity() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start_with_env(
        &model,
        "",
        &[("CONFIDANT__INFERENCE__SHARE_LONE_TEXTS", "true")],
    )
    .await;
    let mut c = EmbeddingServiceClient::new(d.channel().await);
    for (t, want) in reference() {
        // One text per call: a lone caller's pass, the one the option shares.
        let r = c
            .embed(d.req(embed_request(&[&t])))
            .await
            .unwrap()
            .into_inner();
        let cos = cosine(&r.embeddings[0].vector, &want);
        assert!(cos >= 0.9999, "cosine {cos} for {t:?}");
    }
    if confidant_inference::cpu_threads() > 1 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", d.child.id())).unwrap();
        let names: Vec<String> = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("encoder-share")),
            "no kept thread in {names:?}"
        );
    } else {
        eprintln!("SKIPPED the kept-thread check: one CPU thread, nothing to share with");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_work_for_standard_tools() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(d.channel().await);
    for service in [
        "",
        "confidant.v1.EmbeddingService",
        "confidant.v1.AdminService",
    ] {
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().status, 1, "{service} not SERVING");
    }
    let mut r = ServerReflectionClient::new(d.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "confidant.v1.EmbeddingService",
        "confidant.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_answers_resource_exhausted_and_recovers() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(
        &model,
        "[inference]\nqueue_capacity = 1\nmax_batch_tokens = 512\nmax_batch_size = 4\n[limits]\nmax_texts_per_request = 64\n",
    )
    .await;
    let channel = d.channel().await;
    let long = "my card was charged twice and I would like a refund please ".repeat(20);
    let mut calls = Vec::new();
    for _ in 0..24 {
        let mut c = EmbeddingServiceClient::new(channel.clone());
        let texts = vec![long.clone(); 32];
        let token = d.token.clone();
        calls.push(tokio::spawn(async move {
            c.embed(common::with_token(
                pb::EmbedRequest { texts, kind: 0 },
                &token,
            ))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
        }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => exhausted += 1,
            Err(other) => panic!("unexpected status {other:?}"),
        }
    }
    assert!(ok >= 1, "nothing was served");
    assert!(
        exhausted >= 1,
        "queue of 1 never overflowed with 24 concurrent callers"
    );
    // Recovers at once.
    let mut c = EmbeddingServiceClient::new(channel);
    assert!(c.embed(d.req(embed_request(&["hello"]))).await.is_ok());
    let mut a = AdminServiceClient::new(d.channel().await);
    let s = a
        .status(d.req(pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(s.queue.unwrap().rejected >= exhausted as u64);
}

fn recv_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {want}: {e}; saw {seen:?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        seen.push(msg.clone());
        if msg.lines().any(|l| l == want) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_systemd_notify_reload_with_broken_model_and_drain() {
    let Some(model) = model_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let notify_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let notify_env = notify_path.display().to_string();
    let mut d = Daemon::start_with_env(&model, "", &[("NOTIFY_SOCKET", &notify_env)]).await;
    let mut seen = Vec::new();
    recv_notify(&sock, "READY=1", &mut seen);
    assert!(
        seen.iter().any(|m| m.contains("STATUS=loading model")),
        "no loading STATUS before READY: {seen:?}"
    );

    // A reload that points at a broken model keeps the old one serving.
    let broken = tmp.path().join("broken-model");
    std::fs::create_dir_all(broken.join("1_Pooling")).unwrap();
    let manifest = confidant_inference::Manifest::read(&model).unwrap();
    for f in manifest.files.keys() {
        std::fs::copy(model.join(f), broken.join(f)).unwrap();
    }
    std::fs::copy(
        model.join("confidant-model.toml"),
        broken.join("confidant-model.toml"),
    )
    .unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not the weights").unwrap();
    let original = std::fs::read_to_string(&d.config_path).unwrap();
    let model_line = format!("dir = \"{}\"", model.display());
    let broken_cfg = original.replace(&model_line, &format!("dir = \"{}\"", broken.display()));
    assert_ne!(original, broken_cfg);
    std::fs::write(&d.config_path, broken_cfg).unwrap();
    d.signal("HUP");
    recv_notify(&sock, "RELOADING=1", &mut seen);
    recv_notify(&sock, "READY=1", &mut seen);
    let mut c = EmbeddingServiceClient::new(d.channel().await);
    let r = c
        .embed(d.req(embed_request(&["still the old model"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.dimension, 384);
    let mut admin = AdminServiceClient::new(d.local_channel().await);
    let err = admin
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("model.safetensors"),
        "{}",
        err.message()
    );
    assert!(d.log_text().contains("reload failed"), "{}", d.log_text());

    // Fix the config: the reload RPC now succeeds.
    std::fs::write(&d.config_path, original).unwrap();
    let r = admin
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.models[0].name, "all-MiniLM-L6-v2");

    // SIGTERM while a call is in flight: STOPPING=1, the call completes, exit 0.
    let mut slow = EmbeddingServiceClient::new(d.channel().await);
    let req_texts =
        vec!["please tell me everything about my mortgage and the interest rates ".repeat(12); 64];
    let req = d.req(pb::EmbedRequest {
        texts: req_texts,
        kind: 0,
    });
    let in_flight = tokio::spawn(async move { slow.embed(req).await });
    // Wait until the daemon has the call (queued or running) before asking it to stop.
    let mut local = AdminServiceClient::new(d.local_channel().await);
    let before = local
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap()
        .texts;
    loop {
        let q = local
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .queue
            .unwrap();
        if q.depth > 0 || q.texts > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    d.signal("TERM");
    recv_notify(&sock, "STOPPING=1", &mut seen);
    let r = in_flight.await.unwrap();
    assert!(r.is_ok(), "in-flight call was not drained: {r:?}");
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn check_config_names_the_bad_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:50051\"\n").unwrap();
    let out = Command::new(common::daemon_bin())
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");

    let out = Command::new(common::daemon_bin())
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .env("CONFIDANT__SERVER__LISTEN", "127.0.0.1:50051")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&path, "[inference]\nqueue_capacity = -3\n").unwrap();
    let out = Command::new(common::daemon_bin())
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue_capacity"));
}

#[test]
fn missing_model_fails_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("confidantd.toml");
    std::fs::write(&config, "[server]\nmetrics_listen = \"\"\n").unwrap();
    let out = Command::new(common::daemon_bin())
        .arg("--config")
        .arg(&config)
        .env("CONFIDANT__MODEL__DIR", tmp.path().join("nope"))
        .env("CONFIDANT__STORAGE__URL", common::storage_url(tmp.path()))
        .env(
            "CONFIDANT__SERVER__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("not found"), "{err}");

    // An absent config file named explicitly is an error too, naming the file.
    let out = Command::new(common::daemon_bin())
        .arg("--check-config")
        .env("CONFIDANT_CONFIG", tmp.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_index_is_refused_and_leaves_it_alone() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let index = d.dir.path().join("index");
    // As if the index had been built with another model: a daemon that got past the
    // lock would set the running daemon's index directory aside.
    std::fs::write(index.join("confidant-model"), "another-model\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut second = Command::new(common::daemon_bin())
        .arg("--config")
        .arg(&d.config_path)
        .env("CONFIDANT__STORAGE__URL", common::storage_url(other.path()))
        .env(
            "CONFIDANT__SERVER__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("CONFIDANT__SERVER__METRICS_LISTEN", "")
        .env(
            "CONFIDANT__SERVER__UNIX_SOCKET",
            other.path().join("other.sock"),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second daemon that got going would serve forever: give it a minute.
    for _ in 0..600 {
        if second.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if second.try_wait().unwrap().is_none() {
        let _ = second.kill();
        panic!("a second daemon started on an index in use");
    }
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&index.display().to_string()) && err.contains("in use by another process"),
        "{err}"
    );
    // The running daemon's index is where it was, engine files and all, and it serves.
    assert!(index.join("confidant-model").exists());
    assert!(std::fs::read_dir(&index).unwrap().count() > 1);
    let mut c = EmbeddingServiceClient::new(d.channel().await);
    assert!(c.embed(d.req(embed_request(&["still here"]))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_tenants_and_audit() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    auth_suite(&d).await;
}

/// Authentication, role checks, tenant isolation, revocation and the audit trail, through
/// the real daemon; run on SQLite and (where reachable) PostgreSQL.
async fn auth_suite(d: &Daemon) {
    let ch = d.channel().await;
    let mut e = EmbeddingServiceClient::new(ch.clone());
    let mut a = AdminServiceClient::new(ch.clone());

    // No token, a malformed header, an unknown token: UNAUTHENTICATED.
    let err = e.embed(embed_request(&["hi"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut bad = tonic::Request::new(embed_request(&["hi"]));
    bad.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(
        e.embed(bad).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let forged = common::with_token(embed_request(&["hi"]), "cfd_0000");
    assert_eq!(
        e.embed(forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A bot token embeds but may not administer.
    let bot = d.create_token(&["bot"], "t1").await;
    assert!(
        e.embed(common::with_token(embed_request(&["hi"]), &bot))
            .await
            .is_ok()
    );
    let err = a
        .status(common::with_token(pb::StatusRequest {}, &bot))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Tenant isolation: t1's admin sees and touches only t1.
    let t2_bot = d.create_token(&["bot"], "t2").await;
    let err = a
        .list_tokens(d.req(pb::ListTokensRequest {
            tenant: "t2".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mine = a
        .list_tokens(d.req(pb::ListTokensRequest {
            tenant: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(mine.iter().all(|t| t.tenant == "t1"), "{mine:?}");
    assert!(mine.len() >= 2);
    let mut local = AdminServiceClient::new(d.local_channel().await);
    let t2 = local
        .list_tokens(pb::ListTokensRequest {
            tenant: "t2".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(t2.len(), 1);
    let err = a
        .revoke_token(d.req(pb::RevokeTokenRequest {
            id: t2[0].id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "another tenant's token must look absent"
    );
    let err = a
        .create_token(d.req(pb::CreateTokenRequest {
            roles: vec!["bot".into()],
            tenant: "t2".into(),
            description: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = a
        .create_token(d.req(pb::CreateTokenRequest {
            roles: vec!["bot".into(), "root".into()],
            tenant: String::new(),
            description: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("roles[1]"), "{}", err.message());
    // Model reload is for the local operator only.
    let err = a
        .reload_models(d.req(pb::ReloadModelsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Revocation takes effect at once; stored as a hash only.
    let bot_id = mine.iter().find(|t| t.roles == ["bot"]).unwrap().id.clone();
    a.revoke_token(d.req(pb::RevokeTokenRequest { id: bot_id.clone() }))
        .await
        .unwrap();
    let err = e
        .embed(common::with_token(embed_request(&["hi"]), &bot))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        e.embed(common::with_token(embed_request(&["hi"]), &t2_bot))
            .await
            .is_ok()
    );

    // The audit trail: t1's admin sees t1's entries only, with who did what.
    let records = a
        .list_audit(d.req(pb::ListAuditRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(records.iter().all(|r| r.tenant == "t1"), "{records:?}");
    assert!(records.iter().any(|r| r.action == "token.revoke"
        && r.target == bot_id
        && r.actor.starts_with("token:")));
    assert!(
        records
            .iter()
            .any(|r| r.action == "token.create" && r.actor.starts_with("local"))
    );
    let all = local
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(all.iter().any(|r| r.tenant == "t2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_suite_on_postgresql() {
    let Some(model) = model_dir() else { return };
    let Some((url, schema)) = common::postgres_schema("auth").await else {
        return;
    };
    {
        let d = Daemon::start_with_env(&model, "", &[("CONFIDANT__STORAGE__URL", &url)]).await;
        auth_suite(&d).await;
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_pii_never_reaches_logs_or_the_database() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start_with_env(&model, "", &[("CONFIDANT__LOG__LEVEL", "debug")]).await;
    let mut e = EmbeddingServiceClient::new(d.channel().await);
    let pii = [
        "4111 1111 1111 1111",
        "11010519491231002X",
        "13812345678",
        "jane.doe@example.com",
        "GB82 WEST 1234 5698 7654 32",
    ];
    let texts: Vec<String> = pii
        .iter()
        .map(|p| format!("my details are {p}, please help"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed(d.req(embed_request(&refs))).await.unwrap();
    let _ = e
        .embed(d.req(embed_request(&["", refs[0]])))
        .await
        .unwrap_err();
    d.signal("TERM");
    let mut d = d;
    d.wait_exit(Duration::from_secs(30));
    let logs = d.log_text();
    let mut db = Vec::new();
    for entry in std::fs::read_dir(d.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().contains("confidant.db") {
            db.extend(std::fs::read(p).unwrap());
        }
    }
    assert!(!db.is_empty(), "no database files found");
    let db = String::from_utf8_lossy(&db);
    for p in pii {
        assert!(!logs.contains(p), "{p} leaked into the log");
        assert!(!db.contains(p), "{p} leaked into the database");
    }
}

/// systemd socket activation: the daemon serves on the TCP socket it inherits as
/// LISTEN_FDS (fd 3) instead of binding the address in its config. A few lines of Python
/// play systemd: bind the socket, move it to fd 3, set LISTEN_FDS and LISTEN_PID (its own
/// pid, which exec keeps) and exec confidantd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_inherited_from_systemd() {
    let Some(model) = model_dir() else { return };
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: serves_on_a_socket_inherited_from_systemd: python3 not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (inherited, configured) = (common::free_port(), common::free_port());
    let config = dir.path().join("confidantd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{configured}\"\nmetrics_listen = \"\"\n\
             [model]\ndir = \"{}\"\n[storage]\nurl = \"{}\"\n[index]\npath = \"{}\"\n\
             [classifiers]\ndir = \"{}\"\n[log]\nformat = \"json\"\n",
            model.display(),
            common::storage_url(dir.path()),
            dir.path().join("index").display(),
            dir.path().join("classifiers").display(),
        ),
    )
    .unwrap();
    let launcher = "import os, socket, sys\n\
        s = socket.socket()\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('127.0.0.1', int(sys.argv[1])))\n\
        s.listen(128)\n\
        if s.fileno() != 3: os.dup2(s.fileno(), 3)\n\
        os.set_inheritable(3, True)\n\
        os.environ['LISTEN_FDS'] = '1'\n\
        os.environ['LISTEN_PID'] = str(os.getpid())\n\
        os.execv(sys.argv[2], [sys.argv[2], '--config', sys.argv[3]])\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(launcher)
        .arg(inherited.to_string())
        .arg(common::daemon_bin())
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{inherited}");
    let mut serving = false;
    for _ in 0..600 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(addr.clone())
            .unwrap()
            .connect()
            .await
        {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            if let Ok(r) = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                && r.into_inner().status == 1
            {
                serving = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let configured_open = std::net::TcpStream::connect(("127.0.0.1", configured)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "no SERVING answer on the inherited socket");
    assert!(
        !configured_open,
        "with a socket from systemd, server.listen must not be bound"
    );
}
