//! Shared helpers for the end-to-end tests: start the real `confidantd` binary with a
//! temporary config, wait until it serves, talk to it over real gRPC, stop it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confidant_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// The confidantd binary: Cargo names it for the daemon's own tests; other packages' tests
/// find it beside their own test executable (target/<profile>/), where `cargo test
/// --workspace` has built it.
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_confidantd") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("confidantd"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The default model, or `None` (with a loud message) where it is not installed. In CI
/// (CI set) a missing model is a failure: .ci/run installs it first.
pub fn model_dir() -> Option<PathBuf> {
    installed_model(
        "default",
        "CONFIDANT_MODEL_DIR",
        "all-MiniLM-L6-v2",
        "install-default",
    )
}

/// The multilingual model (`models/install-multilingual`), likewise.
pub fn multilingual_model_dir() -> Option<PathBuf> {
    installed_model(
        "multilingual",
        "CONFIDANT_MULTILINGUAL_MODEL_DIR",
        "multilingual-e5-small",
        "install-multilingual",
    )
}

fn installed_model(what: &str, env: &str, name: &str, installer: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(name)
    });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} model missing at {} in CI: run models/{installer}",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: {what} model not installed at {} (run models/{installer})",
        dir.display()
    );
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// A token for tenant "t1" with every role, created over the local socket.
    pub token: String,
    env: Vec<(String, String)>,
}

fn spawn_daemon(
    config_path: &Path,
    env: &[(String, String)],
    logs: &Arc<Mutex<Vec<String>>>,
) -> Child {
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--config")
        .arg(config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn confidantd");
    if let Some(stderr) = child.stderr.take() {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                logs.lock().unwrap().push(line);
            }
        });
    }
    child
}

impl Daemon {
    /// Starts confidantd with `extra` TOML appended to a config that points at `model`
    /// and at a fresh port, and waits until its health service answers SERVING.
    pub async fn start(model: &Path, extra: &str) -> Daemon {
        Self::start_with_env(model, extra, &[]).await
    }

    pub async fn start_with_env(model: &Path, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let metrics_port = free_port();
        let socket = dir.path().join("confidantd.sock");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nunix_socket = \"{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\n[model]\ndir = \"{}\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n[storage]\nurl = \"{}\"\n\n[classifiers]\ndir = \"{}\"\n\n[index]\npath = \"{}\"\n{extra}\n",
            socket.display(),
            metrics_port,
            model.display(),
            storage_url(dir.path()),
            dir.path().join("classifiers").display(),
            dir.path().join("index").display(),
        );
        let config_path = dir.path().join("confidantd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let child = spawn_daemon(&config_path, &env, &logs);
        let mut d = Daemon {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            port,
            metrics_port,
            dir,
            config_path,
            logs,
            token: String::new(),
            env,
        };
        d.wait_serving().await;
        d.token = d
            .create_token(&["bot", "assist", "qa", "kb-editor", "admin"], "t1")
            .await;
        d
    }

    /// Stops the process (SIGKILL when `kill9`, else SIGTERM and a clean exit) and starts
    /// it again on the same configuration, database and index. Tokens stay valid.
    pub async fn restart(&mut self, kill9: bool) {
        if kill9 {
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else {
            self.signal("TERM");
            self.wait_exit(Duration::from_secs(60));
        }
        self.child = spawn_daemon(&self.config_path, &self.env, &self.logs);
        self.wait_serving().await;
    }

    /// Creates a token over the local socket (the operator's path).
    pub async fn create_token(&self, roles: &[&str], tenant: &str) -> String {
        let mut admin =
            pb::admin_service_client::AdminServiceClient::new(self.local_channel().await);
        admin
            .create_token(pb::CreateTokenRequest {
                roles: roles.iter().map(|r| r.to_string()).collect(),
                tenant: tenant.into(),
                description: "e2e".into(),
            })
            .await
            .expect("create token over the Unix socket")
            .into_inner()
            .token
    }

    /// `msg` with this daemon's default token.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        with_token(msg, &self.token)
    }

    /// A channel over the daemon's Unix socket: the local operator.
    pub async fn local_channel(&self) -> Channel {
        self.try_local_channel()
            .await
            .expect("connect to the Unix socket")
    }

    async fn try_local_channel(&self) -> Result<Channel, tonic::transport::Error> {
        let path = self.socket();
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    }

    /// The Prometheus exposition text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("metrics listener");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("confidantd.sock")
    }

    pub async fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "confidantd exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            // Over the local socket, so that TLS-only daemons are awaited the same way.
            if self.socket().exists()
                && let Ok(ch) = self.try_local_channel().await
            {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                if let Ok(r) = h
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    && r.into_inner().status == 1
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "confidantd never became ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect to confidantd")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "confidantd did not exit within {within:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The per-test SQLite database (CONFIDANT__STORAGE__URL in the daemon's environment
/// overrides it, e.g. for PostgreSQL).
pub fn storage_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("confidant.db").display())
}

pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// (sentence, reference embedding) pairs from sentence-transformers.
pub fn reference() -> Vec<(String, Vec<f32>)> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../inference/tests/data/reference.json")).unwrap();
    v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["text"].as_str().unwrap().to_string(),
                s["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            )
        })
        .collect()
}

/// A PostgreSQL schema of its own for one test, or `None` (with a loud "SKIPPED") where no
/// server is reachable. Returns the URL the daemon should use.
pub async fn postgres_schema(test: &str) -> Option<(String, PgSchema)> {
    use sqlx::Executor;
    let url = std::env::var("CONFIDANT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = match sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&url)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED (PostgreSQL): {test}: no server at {url}: {e}");
            return None;
        }
    };
    let schema = format!("confidant_e2e_{}_{test}", std::process::id());
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .unwrap();
    let scoped = format!("{url}?options=-c%20search_path%3D{schema}");
    Some((scoped, PgSchema { admin, schema }))
}

pub struct PgSchema {
    admin: sqlx::AnyPool,
    schema: String,
}

impl PgSchema {
    pub async fn drop(self) {
        use sqlx::Executor;
        self.admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.schema
            )))
            .await
            .unwrap();
    }
}
