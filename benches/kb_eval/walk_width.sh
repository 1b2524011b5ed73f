#!/usr/bin/env bash
# Does the HNSW walk width (index.hnsw_ef) change what the knowledge base returns, at
# scale? On a copy of the load benchmark's big knowledge base (benches/load/run.sh with
# WORK and BIG_KB=1 first) plus the 213 COVID-QA FAQ articles:
#  - recall@1/@5 and MRR@10 of the 244 labelled COVID-QA paraphrases (confidantctl kb eval),
#  - how often each width's top hybrid hit is the one a near-exact walk (REF_EF) returns,
#    over the 2,000 utterances of ../shared/bench/utterances_2000.txt.
#
#   WIDTHS="192 100 64" BIG=target/load-big benches/kb_eval/walk_width.sh
#   BIN=/tmp/bin   (confidantd and confidantctl of an earlier build; default target/debug)
#
# The reference pass calls `kb search` once per utterance (~10 min on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
big="${BIG:-target/load-big}"
bin="$(cd "${BIN:-target/debug}" && pwd)"
ref_ef="${REF_EF:-1024}"
utt="${UTTERANCES:-../shared/bench/utterances_2000.txt}"
[ -f "$utt" ] || { echo "walk_width.sh: $utt not found (needs ../shared)" >&2; exit 1; }
source benches/daemon.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
copy_kb "$big" "$work"
python3 benches/kb_eval/prepare.py --out "$work/data" --medquad-stride 8 >&2
bench_config "$work" "$(pwd)/models/all-MiniLM-L6-v2" "${DTYPE:-int8}" "[kb]
chunk_tokens = ${CHUNK_TOKENS:-32}"
ctl="$bin/confidantctl --addr unix:$work/confidantd.sock"
# Runs "$2..." against a daemon searching with hnsw_ef = $1.
with_width() {
  CONFIDANT__INDEX__HNSW_EF="$1" "$bin/confidantd" --config "$work/confidantd.toml" 2>>"$work/daemon.log" &
  local pid=$!
  wait_healthy $ctl || { kill "$pid"; wait "$pid" 2>/dev/null || true; return 1; }
  shift
  "$@" || { kill "$pid"; wait "$pid" 2>/dev/null || true; return 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
reference() {
  $ctl kb --tenant bench import "$work/data/covid-kb.jsonl" >&2
  sleep 60 # the optimiser indexes the new points
  while IFS= read -r q; do
    $ctl --json kb --tenant bench search --limit 1 "$q" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"query": sys.argv[1], "expected": [r[0]["article_id"]] if r else []}))' "$q"
  done < "$utt" > "$work/agree.jsonl"
  evaluate "$ref_ef"
}
evaluate() {
  $ctl --json kb --tenant bench eval --queries "$work/data/covid-queries.jsonl" > "$work/covid-$1.json"
  $ctl --json kb --tenant bench eval --modes hybrid --queries "$work/agree.jsonl" > "$work/agree-$1.json"
  python3 - "$work" "$1" <<'PY'
import json, sys
w, ef = sys.argv[1], sys.argv[2]
c = {r["mode"]: r for r in json.load(open(f"{w}/covid-{ef}.json"))}
a = json.load(open(f"{w}/agree-{ef}.json"))[0]
print(json.dumps({"hnsw_ef": int(ef),
                  "covid_hybrid": [round(c["hybrid"][k], 3) for k in ("recall_at_1", "recall_at_5", "mrr_at_10")],
                  "covid_dense": [round(c["dense"][k], 3) for k in ("recall_at_1", "recall_at_5", "mrr_at_10")],
                  "top1_as_reference": a["recall_at_1"], "reference_in_top5": a["recall_at_5"]}))
PY
}
with_width "$ref_ef" reference
for ef in ${WIDTHS:-192 100 64}; do with_width "$ef" evaluate "$ef"; done
