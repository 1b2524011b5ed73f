# Sourced by the benchmark scripts that start their own confidantd on a scratch directory.

# bench_config WORK MODEL_DIR [DTYPE] [TABLES]: writes WORK/confidantd.toml for a daemon
# whose state all lies under WORK (SQLite, the embedded index, classifiers), reached over
# WORK/confidantd.sock, logging warnings only; TABLES (TOML text: [kb], [qa], ...) is
# appended. BENCH_LISTEN and BENCH_METRICS set the gRPC and Prometheus addresses
# (default: any free port, no metrics).
bench_config() {
  local work="$1" model="$2" dtype="${3:-}" tables="${4:-}"
  cat > "$work/confidantd.toml" <<TOML
[server]
listen = "${BENCH_LISTEN:-127.0.0.1:0}"
unix_socket = "$work/confidantd.sock"
metrics_listen = "${BENCH_METRICS:-}"
[model]
dir = "$model"
dtype = "$dtype"
[storage]
url = "sqlite://$work/confidant.db"
[index]
path = "$work/index"
[classifiers]
dir = "$work/classifiers"
[log]
format = "text"
level = "warn"
$tables
TOML
}

# copy_kb BIG WORK: copies the knowledge base a benchmark imported into BIG (SQLite and the
# embedded index: benches/load/run.sh with WORK=BIG BIG_KB=1 PREPARE_ONLY=1) into WORK, so
# that a script may change its copy.
copy_kb() {
  local big="$1" work="$2"
  [ -f "$big/confidant.db" ] || { echo "no knowledge base in $big (run benches/load/run.sh with WORK=$big BIG_KB=1 PREPARE_ONLY=1)" >&2; return 1; }
  cp -r "$big/confidant.db" "$big/index" "$work/"
  for f in confidant.db-wal confidant.db-shm; do
    if [ -f "$big/$f" ]; then cp "$big/$f" "$work/"; fi
  done
}

# wait_healthy CTL [ARGS...]: returns once `CTL ARGS... health` succeeds; fails after 5 min.
wait_healthy() {
  for _ in $(seq 1 600); do "$@" health >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "the daemon did not answer health within 5 minutes" >&2
  return 1
}
