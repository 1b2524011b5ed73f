#!/usr/bin/env bash
# Speed under load, through the real daemon over gRPC: raw embedding capacity (Embed, one
# text per call) beside the bot's Answer capacity for the same texts, Answer latency
# open-loop at half its capacity, 10x overload (every call answered OK or
# RESOURCE_EXHAUSTED, memory bounded, recovery), Suggest and Route. One JSON line per run.
#
#   benches/load/run.sh            # DURATION=20 CONCURRENCY=8 OVERLOAD_SECONDS=60
#
# Starts its own confidantd (debug build, dependencies at opt-level 3, CPU) on a scratch
# directory with the demo knowledge base and intents. Needs the default model and
# ../shared/bench/utterances_2000.txt. Run on an idle machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
duration="${DURATION:-20}"
conc="${CONCURRENCY:-8}"
overload_s="${OVERLOAD_SECONDS:-60}"
utt="${UTTERANCES:-../shared/bench/utterances_2000.txt}"
[ -f "$utt" ] || { echo "load/run.sh: $utt not found (needs ../shared)" >&2; exit 1; }
models/install-default >/dev/null
cargo build --locked --bins 2>/dev/null
work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/confidantd.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
unix_socket = "$work/confidantd.sock"
metrics_listen = ""
[model]
dir = "$(pwd)/models/all-MiniLM-L6-v2"
[storage]
url = "sqlite://$work/confidant.db"
[index]
path = "$work/index"
[classifiers]
dir = "$work/classifiers"
[routing.queues]
lost_card = "cards"
balance = "accounts"
transfer = "payments"
mortgage = "lending"
[log]
format = "text"
level = "warn"
TOML
target/debug/confidantd --config "$work/confidantd.toml" 2>"$work/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$work"' EXIT
ctl="target/debug/confidantctl --addr unix:$work/confidantd.sock"
for _ in $(seq 1 600); do $ctl health >/dev/null 2>&1 && break; sleep 0.5; done
$ctl --json tokens create --role bot,kb-editor,admin --tenant bench \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$work/token"
$ctl kb --tenant bench import packaging/demo-kb/bank-faq.jsonl >/dev/null
$ctl intents train --data packaging/demo-intents/bank-intents.csv --text-column utterance \
  --label-column intent --min-examples 3 --out "$work/classifiers/intent" >/dev/null
$ctl models reload >/dev/null
load() { target/debug/load --addr "http://127.0.0.1:$port" --token-file "$work/token" --utterances "$utt" "$@"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }

embed=$(load --rpc embed --concurrency "$conc" --duration "$duration" --label "embed capacity"); echo "$embed"
answer=$(load --rpc answer --concurrency "$conc" --duration "$duration" --label "answer capacity"); echo "$answer"
cap=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok_per_second"])' "$answer")
half=$(python3 -c "print(round($cap / 2, 1))")
load --rpc answer --rate "$half" --duration "$duration" --label "answer at half capacity"
load --rpc suggest --concurrency "$conc" --duration "$duration" --label "suggest capacity"
load --rpc suggest --rate 200 --duration "$duration" --label "suggest 200/s"
load --rpc route --concurrency "$conc" --duration "$duration" --label "route capacity"
before=$(rss)
over=$(python3 -c "print(round($cap * 10, 1))")
load --rpc answer --rate "$over" --duration "$overload_s" --label "answer at 10x capacity"
after=$(rss)
echo "{\"label\": \"daemon RSS\", \"before_overload_kib\": $before, \"after_overload_kib\": $after}"
load --rpc answer --concurrency "$conc" --duration "$duration" --label "answer capacity after overload"
python3 - "$embed" "$answer" <<'PY'
import json, sys
e, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"label": "answer / embed capacity", "ratio": round(a["ok_per_second"] / e["ok_per_second"], 3)}))
PY
