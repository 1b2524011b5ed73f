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
    let r = c.embed(embed_request(&texts)).await.unwrap().into_inner();
    assert_eq!(r.model, "all-MiniLM-L6-v2");
    assert_eq!(r.dimension, 384);
    assert_eq!(r.embeddings.len(), refs.len());
    for ((t, want), got) in refs.iter().zip(&r.embeddings) {
        let cos = cosine(&got.vector, want);
        assert!(cos >= 0.9999, "cosine {cos} for {t:?}");
        assert!(!got.truncated);
    }

    let err = c.embed(embed_request(&["fine", "  "])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("texts[1]"), "{}", err.message());
    let err = c.embed(embed_request(&[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c.embed(embed_request(&["x"; 9])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit of 8"), "{}", err.message());
    let long = "a".repeat(501);
    let err = c.embed(embed_request(&["ok", &long])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("texts[1]"), "{}", err.message());
    let err = c
        .embed(pb::EmbedRequest {
            texts: vec!["x".into()],
            kind: 42,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("kind"));

    // The daemon is still fine after the bad calls.
    assert!(c.embed(embed_request(&["still serving"])).await.is_ok());
    // Customer text never reaches the log.
    assert!(!d.log_text().contains("online banking password"));
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
        calls.push(tokio::spawn(async move {
            c.embed(pb::EmbedRequest { texts, kind: 0 })
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
    assert!(c.embed(embed_request(&["hello"])).await.is_ok());
    let mut a = AdminServiceClient::new(d.channel().await);
    let s = a.status(pb::StatusRequest {}).await.unwrap().into_inner();
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
        .embed(embed_request(&["still the old model"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.dimension, 384);
    let mut admin = AdminServiceClient::new(d.channel().await);
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
    let texts =
        vec!["please tell me everything about my mortgage and the interest rates ".repeat(12); 64];
    let in_flight =
        tokio::spawn(async move { slow.embed(pb::EmbedRequest { texts, kind: 0 }).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
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
