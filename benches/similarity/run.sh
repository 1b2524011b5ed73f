#!/usr/bin/env bash
# Paraphrase detection (ROC AUC of cosine similarity) and embedding throughput of the
# default English model and the multilingual one, side by side in the same run:
#   - pairs_zh.csv: 242 Chinese bank and hospital question pairs written for Confidant
#     (121 paraphrases; the others share the topic but ask something else)
#   - pairs_en.csv: 98 English pairs of the same kind
#   - ../shared/data/covid_qa/eval_question_similarity_en.csv: 488 labelled COVID-QA pairs
# then embed-throughput on ../shared/bench/utterances_2000.txt for each model (2 threads,
# batch 32). Run on an idle machine.
#
#   benches/similarity/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
threads="${THREADS:-2}"
models/install-default >/dev/null
cargo build --locked --bins >&2
CONFIDANTCTL=target/debug/confidantctl models/install-multilingual >/dev/null
files=(benches/similarity/pairs_zh.csv benches/similarity/pairs_en.csv)
covid=../shared/data/covid_qa/eval_question_similarity_en.csv
[ -f "$covid" ] && files+=("$covid") || echo "similarity: $covid not found (needs ../shared): skipped" >&2
for m in models/all-MiniLM-L6-v2 models/multilingual-e5-small; do
  RAYON_NUM_THREADS="$threads" target/debug/similarity "$m" "${files[@]}"
done
sentences=../shared/bench/utterances_2000.txt
if [ -f "$sentences" ]; then
  for m in models/all-MiniLM-L6-v2 models/multilingual-e5-small; do
    echo "{\"model\": \"$(basename "$m")\", \"throughput\": $(RAYON_NUM_THREADS="$threads" target/debug/embed-throughput "$m" "$sentences" --runs 3)}"
  done
else
  echo "similarity: $sentences not found (needs ../shared): throughput skipped" >&2
fi
