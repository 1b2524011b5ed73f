#!/usr/bin/env bash
# The bot's answer policy measured through the real daemon: on the COVID-QA FAQ (213
# articles), how many in-domain paraphrases (244) get the right curated answer, a wrong
# one, choices or a hand-off, and how many out-of-domain questions (every 30th BANKING77
# utterance, 334 bank questions a COVID FAQ cannot answer) wrongly get an answer, for a
# few settings of bot.min_score:bot.min_margin (each a daemon restart on the same
# database and index).
#
#   benches/bot_eval/run.sh          # SETTINGS="0.6:0.03 0.6:0.06 0.6:0.1 0.5:0.06 0.7:0.06 0.8:0.06"
#   MODEL=models/multilingual-e5-small SETTINGS="0.88:0.01 0.9:0.01 0.9:0.02 0.92:0.01" benches/bot_eval/run.sh
#   DATASET=zh MODEL=models/multilingual-e5-small SETTINGS="0.9:0.02" benches/bot_eval/run.sh
#     (Chinese: benches/bot_eval/prepare_zh.py, from our Chinese pairs and CrossWOZ)
#
# Needs ../shared/data and the default model (models/install-default), or MODEL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ -n "${NO_BUILD:-}" ] || cargo build --locked --bins >&2
models/install-default >/dev/null
model="$(cd "${MODEL:-models/all-MiniLM-L6-v2}" && pwd)"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
if [ "${DATASET:-covid}" = zh ]; then
  python3 benches/bot_eval/prepare_zh.py --out "$work/data"
else
  python3 benches/kb_eval/prepare.py --out "$work/data" --medquad-stride 1000000 >/dev/null
  mv "$work/data/covid-kb.jsonl" "$work/data/kb.jsonl"
  mv "$work/data/covid-queries.jsonl" "$work/data/queries.jsonl"
  python3 - "$work/data" <<'PY'
import csv, json, os, sys
out = sys.argv[1]
rows = list(csv.DictReader(open("../shared/data/banking77/train.csv", encoding="utf-8")))
with open(os.path.join(out, "ood.jsonl"), "w", encoding="utf-8") as f:
    for r in rows[::30]:
        f.write(json.dumps({"query": r["text"].strip(), "expected": []}) + "\n")
PY
fi
source benches/daemon.sh
bench_config "$work" "$model"
ctl=(target/debug/confidantctl --addr "unix:$work/confidantd.sock")
start() {
  # The setting applies to every language (a model's per-language threshold is replaced).
  CONFIDANT__BOT__MIN_SCORE="$1" CONFIDANT__BOT__MIN_MARGIN="$2" \
    CONFIDANT__BOT__MIN_SCORE_BY_LANG="{ zh = $1 }" \
    target/debug/confidantd --config "$work/confidantd.toml" &
  pid=$!
  wait_healthy "${ctl[@]}" || exit 1
}
first=1
for setting in ${SETTINGS:-0.6:0.03 0.6:0.06 0.6:0.1 0.5:0.06 0.7:0.06 0.8:0.06}; do
  s="${setting%%:*}"; m="${setting##*:}"
  start "$s" "$m"
  if [ "$first" = 1 ]; then
    "${ctl[@]}" kb --tenant covid import --batch 64 "$work/data/kb.jsonl" >&2
    first=0
  fi
  python3 benches/bot_eval/score.py --min-score "$s" --min-margin "$m" --tenant covid \
    --in-domain "$work/data/queries.jsonl" --out-of-domain "$work/data/ood.jsonl" \
    -- "${ctl[@]}"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
