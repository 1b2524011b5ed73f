#!/usr/bin/env bash
# Retrieval quality of the knowledge base, measured through the real daemon:
# recall@1, recall@5 and MRR@10 for dense-only, BM25-only and hybrid retrieval on the
# COVID-QA FAQ (paraphrase -> FAQ article) and MedQuAD (question -> its answer).
#
#   benches/kb_eval/run.sh [--medquad-stride N]   (default 8: every 8th MedQuAD pair)
#   SETS=covid benches/kb_eval/run.sh               (one data set)
#   CONFIDANT__KB__FUSION=rrf benches/kb_eval/run.sh (any daemon key, as for confidantd)
#
# Needs ../shared/data and the default model (models/install-default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
stride=8
if [ "${1:-}" = "--medquad-stride" ]; then stride="$2"; fi
cargo build --locked --bins >&2
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 benches/kb_eval/prepare.py --out "$work/data" --medquad-stride "$stride"
source benches/daemon.sh
bench_config "$work" "$(pwd)/models/all-MiniLM-L6-v2"
target/debug/confidantd --config "$work/confidantd.toml" &
pid=$!
ctl=(target/debug/confidantctl --addr "unix:$work/confidantd.sock")
wait_healthy "${ctl[@]}"
for set in ${SETS:-covid medquad}; do
  start=$(date +%s)
  "${ctl[@]}" kb --tenant "$set" import --batch 64 "$work/data/$set-kb.jsonl" >&2
  echo "== $set (import took $(( $(date +%s) - start )) s)"
  "${ctl[@]}" kb --tenant "$set" eval --queries "$work/data/$set-queries.jsonl"
done
