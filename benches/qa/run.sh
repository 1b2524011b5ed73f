#!/usr/bin/env bash
# QA scoring throughput and rule outcomes on real dialogues, through the real daemon:
# the 727 SGD bank dialogues (English) with packaging/rubrics/bank.toml, and the 500
# CrossWOZ validation dialogues (Chinese, travel: most bank rules rightly fail there; it
# measures Chinese throughput) with the same rubric. `confidantctl qa score` sends them
# with 4 in flight; the summary line has transcripts/s and the failure share of each rule.
#
#   benches/qa/run.sh                 # SETS="sgd" for one set
#
# Needs ../shared/data and the default model (models/install-default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --locked --bins >&2
models/install-default >/dev/null
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/rubrics"
cp packaging/rubrics/bank.toml "$work/rubrics/default.toml"
python3 - "$work" <<'PY'
import json, os, sys, zipfile
out = sys.argv[1]
sgd = json.load(open("../shared/data/sgd_banks/train_banks_dialogues.json", encoding="utf-8"))
with open(os.path.join(out, "sgd.jsonl"), "w", encoding="utf-8") as f:
    for d in sgd:
        turns = [{"speaker": "customer" if t["speaker"] == "USER" else "agent", "text": t["utterance"]}
                 for t in d["turns"] if t["utterance"].strip()]
        f.write(json.dumps({"conversation_id": d["dialogue_id"], "agent_id": "sgd", "turns": turns}, ensure_ascii=False) + "\n")
z = zipfile.ZipFile("../shared/data/crosswoz/val.json.zip")
cw = json.loads(z.read("val.json"))
with open(os.path.join(out, "crosswoz.jsonl"), "w", encoding="utf-8") as f:
    for k, d in cw.items():
        turns = [{"speaker": "customer" if m["role"] == "usr" else "agent", "text": m["content"]}
                 for m in d["messages"] if m["content"].strip()]
        f.write(json.dumps({"conversation_id": "cw-" + k, "agent_id": "crosswoz", "turns": turns}, ensure_ascii=False) + "\n")
PY
source benches/daemon.sh
bench_config "$work" "$(pwd)/models/all-MiniLM-L6-v2" "" "[qa]
rubrics_dir = \"$work/rubrics\"
[limits]
max_text_chars = 8192"
ctl=(target/debug/confidantctl --addr "unix:$work/confidantd.sock")
target/debug/confidantd --config "$work/confidantd.toml" &
pid=$!
wait_healthy "${ctl[@]}"
"${ctl[@]}" intents train --data packaging/demo-sentiment/sentiment.csv --text-column utterance \
  --label-column sentiment --task sentiment --min-examples 3 --out "$work/classifiers/sentiment" >/dev/null
"${ctl[@]}" models reload >/dev/null
for set in ${SETS:-sgd crosswoz}; do
  turns=$(python3 -c "import json,sys; print(sum(len(json.loads(l)['turns']) for l in open(sys.argv[1])))" "$work/$set.jsonl")
  echo "== $set ($(wc -l < "$work/$set.jsonl") transcripts, $turns turns)"
  "${ctl[@]}" --json qa --tenant bench score "$work/$set.jsonl" --concurrency 4 | tail -1
done
