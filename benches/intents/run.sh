#!/usr/bin/env bash
# Intent-detection figures on BANKING77 (stratified 80/20 split of ../shared/data's
# train.csv, seed 0) plus the project's own out-of-scope development utterances.
# Trains classifiers (head-only, or --fine-tune for the ft runs) with `confidantctl intents train --local` and evaluates
# them with `confidantctl intents eval` on the held-out 20% plus the held-out half of the
# out-of-scope utterances (test_oos.csv; in-scope figures are over its BANKING77 rows),
# and on the same 20% plus near-domain out-of-scope requests (test_near.csv, oos_near.txt).
# Usage: [RUNS="linear mlp ..."] benches/intents/run.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATA=${BANKING77:-../shared/data/banking77/train.csv}
WORK=${1:-target/bench-intents}
MODEL=${CONFIDANT_MODEL_DIR:-models/all-MiniLM-L6-v2}
if [[ ! -f $DATA ]]; then
  echo "SKIPPED: $DATA not found (set BANKING77=path/to/train.csv)" >&2
  exit 0
fi
models/install-default >/dev/null
# The dev profile optimises every dependency (Candle included) at -O3; the workspace's
# own code only orchestrates, so the debug binary trains at release speed.
cargo build --workspace --locked --bins
CTL=target/debug/confidantctl
python3 benches/intents/split.py --data "$DATA" --oos benches/intents/oos_dev.txt --out "$WORK"
# Near-domain out-of-scope: banking requests BANKING77's intents do not cover (mortgages,
# loans, savings, insurance, branches, ...), never trained on; beside the same test rows.
python3 - "$WORK" <<'PY'
import csv, sys
work = sys.argv[1]
rows = list(csv.reader(open(f"{work}/test.csv", newline="", encoding="utf-8")))
near = [l.strip() for l in open("benches/intents/oos_near.txt", encoding="utf-8") if l.strip()]
with open(f"{work}/test_near.csv", "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(rows + [[t, "out_of_scope"] for t in near])
print(f"test_near.csv: {len(rows) - 1 + len(near)} rows")
PY
cols=(--text-column text --label-column category)
enc=(--local --model-dir "$MODEL")

run() { # name, training file, extra train flags...
  local name=$1 file=$2
  shift 2
  local t0=$SECONDS
  "$CTL" --json intents train "${enc[@]}" "${cols[@]}" --data "$WORK/$file" --out "$WORK/$name" "$@" \
    >"$WORK/$name.train.json"
  echo "== $name: trained in $((SECONDS - t0)) s (embedding + head, 2 threads)"
  for set in test_oos test_near; do
    "$CTL" --json intents eval "${enc[@]}" "${cols[@]}" --classifier "$WORK/$name" --data "$WORK/$set.csv" \
      >"$WORK/$name.$set.eval.json"
    python3 - "$WORK/$name.$set.eval.json" "$set" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["report"]
print(f"   {sys.argv[2]:9}  closed-set acc {r['closed_set_accuracy']*100:6.2f}%  in-scope acc {r['in_scope_accuracy']*100:6.2f}%"
      f"  macro-F1 {r['macro_f1']*100:6.2f}%  OOS precision {r['oos_precision']*100:6.2f}%"
      f"  OOS recall {r['oos_recall']*100:6.2f}%")
PY
  done
}

RUNS=${RUNS:-linear mlp mlp-vectors mlp-norefit mlp-maxprob mlp-oos}
for r in $RUNS; do
  case $r in
    linear) run linear train.csv --head linear ;;
    mlp) run mlp train.csv --head mlp ;;
    mlp-vectors) run mlp-vectors train.csv --head mlp --no-lexical ;;
    mlp-norefit) run mlp-norefit train.csv --head mlp --no-refit ;;
    mlp-maxprob) run mlp-maxprob train.csv --head mlp --oos-score max-prob ;;
    mlp-oos) run mlp-oos train_oos.csv --head mlp ;;
    # the encoder's top layers fine-tuned first (--fine-tune), then the default heads
    ft) run ft train.csv --head mlp --fine-tune ;;
    ft-oos) run ft-oos train_oos.csv --head mlp --fine-tune ;;
    ft-linear) run ft-linear train.csv --head linear --fine-tune ;;
    # a sweep point: FT_LAYERS, FT_EPOCHS, FT_LR (run name ft-sweep)
    ft-sweep) run "ft-l${FT_LAYERS:-3}-e${FT_EPOCHS:-4}-lr${FT_LR:-1e-4}" train.csv --head mlp --fine-tune \
        --fine-tune-layers "${FT_LAYERS:-3}" --fine-tune-epochs "${FT_EPOCHS:-4}" --fine-tune-lr "${FT_LR:-1e-4}" ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
done
