#!/usr/bin/env bash
# Speed under load, through the real daemon over gRPC: raw embedding capacity (Embed, one
# text per call) beside the bot's Answer capacity for the same texts, Answer latency
# open-loop at half its capacity, 10x overload (every call answered OK or
# RESOURCE_EXHAUSTED, memory bounded, recovery), Suggest and Route, agent-assist turns on
# many concurrent streams, and agent-assist turn latency (a 1,000-turn transcript replayed
# through one assist stream, from the daemon's histogram). One JSON line per run.
#
#   benches/load/run.sh            # DURATION=20 CONCURRENCY=64 OVERLOAD_SECONDS=60
#                                  # (64 callers: where Embed and Answer capacity peak on
#                                  # 2 cores; at 8 Embed leaves a quarter of the machine idle)
#   BIG_KB=1 benches/load/run.sh   # ... with ~100k chunks (MedQuAD + BANKING77, big_kb.py)
#                                  # beside the demo KB: ~50 min more to embed them on
#                                  # a 2-core AVX2 machine at f32 (~38 texts/s) and 2-3x
#                                  # faster with DTYPE=int8, both before the packed f32
#                                  # kernel that runs f32 about as fast as int8 there
#                                  # (import not re-timed; benches/README.md)
#
#   DTYPE=int8 benches/load/run.sh # model.dtype for the runs (default: the model's own, f32)
#   WORK=target/load-big BIG_KB=1 benches/load/run.sh
#                                  # keeps its directory: a second run with the same WORK
#                                  # reuses the imported knowledge base (runs only)
#   WORK=target/load-big BIG_KB=1 PREPARE_ONLY=1 benches/load/run.sh
#                                  # imports and trains, waits for an idle daemon, stops
#   PROFILE=release benches/load/run.sh
#                                  # the daemon, CLI and load generator as installed
#                                  # (cargo build --release; default: the debug build)
#   BIN=/tmp/before benches/load/run.sh
#                                  # binaries copied from an earlier build (confidantd,
#                                  # confidantctl, load), not built: two versions side by side
#   FT_INTENT=1 benches/load/run.sh
#                                  # the intent head trained with --fine-tune (its own
#                                  # encoder: a second encoder pass per Answer and Route)
#   HALF_RATE=150 RUNS="answer half" benches/load/run.sh
#                                  # the open-loop run at a rate given, not half the capacity
#   RUNS="embed answer" benches/load/run.sh
#                                  # only the capacity runs named (embed, answer, half,
#                                  # suggest, route, overload, assist); default: all
#
# Starts its own confidantd (by default the debug build, dependencies at opt-level 3, CPU) on a scratch
# directory with the demo knowledge base and intents. Needs the default model and
# ../shared/bench/utterances_2000.txt. Run on an idle machine. Before the runs it waits
# until the daemon is idle (the index optimiser builds HNSW after an import, which would
# otherwise take a core from the first runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
duration="${DURATION:-20}"
conc="${CONCURRENCY:-64}"
overload_s="${OVERLOAD_SECONDS:-60}"
utt="${UTTERANCES:-../shared/bench/utterances_2000.txt}"
[ -f "$utt" ] || { echo "load/run.sh: $utt not found (needs ../shared)" >&2; exit 1; }
# The big KB cuts passages short so that ~100k chunks stay ~2.2M tokens to embed.
if [ "${BIG_KB:-0}" = 1 ]; then export CHUNK_TOKENS="${CHUNK_TOKENS:-32}"; fi
models/install-default >/dev/null
profile="${PROFILE:-debug}"
if [ -n "${BIN:-}" ]; then
  # Prebuilt binaries (a copy of an earlier build), for side-by-side runs of two versions.
  bin="$(cd "$BIN" && pwd)"; profile="$bin"
else
  case "$profile" in
    debug) cargo build --locked --bins 2>/dev/null ;;
    release) cargo build --release --locked --bins 2>/dev/null ;;
    *) echo "load/run.sh: PROFILE must be debug or release, not $profile" >&2; exit 1 ;;
  esac
  bin="target/$profile"
fi
echo "{\"label\": \"build\", \"profile\": \"$profile\"}"
if [ -n "${WORK:-}" ]; then mkdir -p "$WORK"; work="$(cd "$WORK" && pwd)"; keep=1; else work="$(mktemp -d)"; keep=0; fi
fresh=1; [ -f "$work/confidant.db" ] && fresh=0
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free)
mport=$(free)
source benches/daemon.sh
BENCH_LISTEN="127.0.0.1:$port" BENCH_METRICS="127.0.0.1:$mport" \
  bench_config "$work" "$(pwd)/models/all-MiniLM-L6-v2" "${DTYPE:-}" "[kb]
chunk_tokens = ${CHUNK_TOKENS:-200}
[routing.queues]
lost_card = \"cards\"
balance = \"accounts\"
transfer = \"payments\"
mortgage = \"lending\""
"$bin/confidantd" --config "$work/confidantd.toml" 2>"$work/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; [ "$keep" = 1 ] || rm -rf "$work"' EXIT
ctl="$bin/confidantctl --addr unix:$work/confidantd.sock"
wait_healthy $ctl
$ctl --json tokens create --role bot,assist,kb-editor,admin --tenant bench \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$work/token"
[ "$fresh" = 1 ] && $ctl kb --tenant bench import packaging/demo-kb/bank-faq.jsonl >/dev/null
if [ "${BIG_KB:-0}" = 1 ] && [ "$fresh" = 1 ]; then
  python3 benches/load/big_kb.py --shared ../shared --out "$work/big-kb.jsonl" >&2
  t0=$(date +%s)
  $ctl kb --tenant bench import "$work/big-kb.jsonl" >/dev/null
  echo "{\"label\": \"big KB import\", \"seconds\": $(( $(date +%s) - t0 ))}"
fi
echo "{\"label\": \"knowledge base\", \"stats\": $($ctl --json kb --tenant bench stats)}"
if [ "${FT_INTENT:-0}" = 1 ]; then
  # An intent head with its own fine-tuned encoder: every Answer and Route embeds twice.
  $bin/confidantctl intents train --local --model-dir "$(pwd)/models/all-MiniLM-L6-v2" --fine-tune \
    --data packaging/demo-intents/bank-intents.csv --text-column utterance \
    --label-column intent --min-examples 3 --out "$work/classifiers/intent" >/dev/null
else
  $ctl intents train --data packaging/demo-intents/bank-intents.csv --text-column utterance \
    --label-column intent --min-examples 3 --out "$work/classifiers/intent" >/dev/null
fi
$ctl intents train --data packaging/demo-sentiment/sentiment.csv --text-column utterance \
  --label-column sentiment --task sentiment --min-examples 3 --out "$work/classifiers/sentiment" >/dev/null
$ctl models reload >/dev/null
# Idle means under 5% of a core in each 5 s for 35 s in a row: the optimiser looks for work
# every 30 s (index.optimize_interval_seconds), so a shorter quiet spell can come before an
# HNSW build it has yet to start (a catch-up and a flush show too).
cpu() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
t0=$(date +%s); last=$(cpu); quiet=0
while sleep 5; do
  now=$(cpu)
  if [ $(( now - last )) -le $(( $(getconf CLK_TCK) / 4 )) ]; then quiet=$((quiet + 1)); else quiet=0; fi
  [ "$quiet" -ge 7 ] && break
  [ $(( $(date +%s) - t0 )) -ge 1800 ] && { echo "load/run.sh: the daemon is still busy after 30 min; running anyway" >&2; break; }
  last=$now
done
echo "{\"label\": \"waited for an idle daemon\", \"seconds\": $(( $(date +%s) - t0 ))}"
[ "${PREPARE_ONLY:-0}" = 1 ] && exit 0
load() { "$bin/load" --addr "http://127.0.0.1:$port" --token-file "$work/token" --utterances "$utt" --server-pid "$daemon" "$@"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }

runs=" ${RUNS:-embed answer half suggest route overload assist} "
want() { [[ "$runs" == *" $1 "* ]]; }
embed='' answer=''
if want embed; then
  embed=$(load --rpc embed --concurrency "$conc" --duration "$duration" --label "embed capacity"); echo "$embed"
fi
if want answer || want half || want overload; then
  answer=$(load --rpc answer --concurrency "$conc" --duration "$duration" --label "answer capacity"); echo "$answer"
  cap=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok_per_second"])' "$answer")
  # The index searches' own time (on their thread) over every Answer so far, warm-up included.
  curl -s "http://127.0.0.1:$mport/metrics" | python3 -c '
import json, sys
s = {}
for line in sys.stdin:
    if line.startswith("confidant_kb_search_seconds_"):
        name, value = line.rsplit(" ", 1)
        sig = name.split("signal=\"")[1].split("\"")[0]
        if name.startswith("confidant_kb_search_seconds_sum"):
            s.setdefault(sig, {})["sum"] = float(value)
        elif name.startswith("confidant_kb_search_seconds_count"):
            s.setdefault(sig, {})["count"] = float(value)
print(json.dumps({"label": "index search, mean ms on its thread",
                  **{k: round(1000 * v["sum"] / v["count"], 3) for k, v in sorted(s.items()) if v.get("count")}}))
'
  # Bot turns per commit (direct ones count 1; groups on a busy SQLite, daemon/src/store/group.rs).
  curl -s "http://127.0.0.1:$mport/metrics" | python3 -c '
import json, sys
s = {}
for line in sys.stdin:
    if line.startswith("confidant_store_turns_per_commit_"):
        name, value = line.rsplit(" ", 1)
        s[name.split("{")[0].rsplit("_", 1)[1]] = float(value)
if s.get("count"):
    print(json.dumps({"label": "bot turns per commit", "mean": round(s["sum"] / s["count"], 2), "commits": int(s["count"])}))
'
fi
if want half; then
  # HALF_RATE: an offered rate of one's own (e.g. the same for two versions side by side).
  half="${HALF_RATE:-$(python3 -c "print(round($cap / 2, 1))")}"
  load --rpc answer --rate "$half" --duration "$duration" --label "answer at half capacity"
fi
if want suggest; then
  load --rpc suggest --concurrency "$conc" --duration "$duration" --label "suggest capacity"
  load --rpc suggest --rate 200 --duration "$duration" --label "suggest 200/s"
fi
want route && load --rpc route --concurrency "$conc" --duration "$duration" --label "route capacity"
if want overload; then
  before=$(rss)
  over=$(python3 -c "print(round($cap * 10, 1))")
  load --rpc answer --rate "$over" --duration "$overload_s" --label "answer at 10x capacity"
  after=$(rss)
  echo "{\"label\": \"daemon RSS\", \"before_overload_kib\": $before, \"after_overload_kib\": $after}"
  load --rpc answer --concurrency "$conc" --duration "$duration" --label "answer capacity after overload"
fi
if [ -n "$embed" ] && [ -n "$answer" ]; then
python3 - "$embed" "$answer" <<'PY'
import json, sys
e, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"label": "answer / embed capacity", "ratio": round(a["ok_per_second"] / e["ok_per_second"], 3)}))
PY
fi
want assist || exit 0
# Agent assist: 500 customer turns (the utterances) and 500 agent turns through one stream.
python3 - "$utt" "$work/transcript.jsonl" <<'PY'
import json, sys
u = [l.strip() for l in open(sys.argv[1], encoding="utf-8") if l.strip()][:500]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for t in u:
        f.write(json.dumps({"speaker": "customer", "text": t}) + "\n")
        f.write(json.dumps({"speaker": "agent", "text": "Thank you, let me check that for you."}) + "\n")
PY
$ctl --json assist --tenant bench "$work/transcript.jsonl" >/dev/null
curl -s "http://127.0.0.1:$mport/metrics" | python3 -c '
import json, sys
b = {}
for line in sys.stdin:
    if line.startswith("confidant_assist_turn_seconds"):
        name, value = line.rsplit(" ", 1)
        sp = name.split("speaker=\"")[1].split("\"")[0]
        d = b.setdefault(sp, {"buckets": []})
        if "_bucket" in name:
            d["buckets"].append((float(name.split("le=\"")[1].split("\"")[0].replace("+Inf", "inf")), float(value)))
        elif name.startswith("confidant_assist_turn_seconds_sum"):
            d["sum"] = float(value)
        elif name.startswith("confidant_assist_turn_seconds_count"):
            d["count"] = float(value)
for sp, d in sorted(b.items()):
    n = d["count"]
    p99 = next(le for le, c in sorted(d["buckets"]) if c >= 0.99 * n)
    print(json.dumps({"label": "assist " + sp + " turns", "turns": int(n), "mean_ms": round(1000 * d["sum"] / n, 2),
                      "p99_at_most_ms": p99 * 1000, "within_50ms": sum(c for le, c in d["buckets"] if le == 0.05) / n}))
'
# After the histogram above (it counts every assist turn): many desktops, streams flat out, then 128 streams a turn ~1 s apart.
load --rpc assist --concurrency "$conc" --duration "$duration" --label "assist streams, no pause"
load --rpc assist --concurrency 128 --think-ms 1000 --duration "$duration" --label "assist 128 streams, 1 s apart"
