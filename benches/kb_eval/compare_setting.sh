#!/usr/bin/env bash
# Does a daemon setting change what the knowledge base answers with, at scale? On a copy of
# the load benchmark's big knowledge base (benches/load/run.sh with WORK and BIG_KB=1 first)
# plus the 213 COVID-QA FAQ articles, a fresh daemon per value of CONFIDANT__$SETTING
# searches with the bot's limit (`kb search --limit 5`, hybrid):
#  - recall@1 and @5 of the 244 labelled COVID-QA paraphrases,
#  - against the first value: the same top article, the first value's top article among
#    the top 5, the same top 5, over every third of ../shared/bench/utterances_2000.txt.
#
#   SETTING=KB__CANDIDATES VALUES="50 20" benches/kb_eval/compare_setting.sh
#   BIG=target/load-big  BIN=/tmp/bin (confidantd, confidantctl; default target/debug)
#   DTYPE=int8           (model.dtype; default the model's own, as the load benchmark imports)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
big="${BIG:-target/load-big}"
bin="$(cd "${BIN:-target/debug}" && pwd)"
utt="${UTTERANCES:-../shared/bench/utterances_2000.txt}"
: "${SETTING:?SETTING=KB__CANDIDATES (a CONFIDANT__ key without its prefix)}"
: "${VALUES:?VALUES=\"50 20\" (the first is the reference)}"
[ -f "$utt" ] || { echo "compare_setting.sh: $utt not found (needs ../shared)" >&2; exit 1; }
source benches/daemon.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
copy_kb "$big" "$work"
python3 benches/kb_eval/prepare.py --out "$work/data" >&2
awk 'NR % 3 == 1 && NF' "$utt" | python3 -c '
import json, sys
for line in sys.stdin:
    print(json.dumps({"query": line.strip(), "expected": []}))' > "$work/utterances.jsonl"
bench_config "$work" "$(pwd)/models/all-MiniLM-L6-v2" "${DTYPE:-}" "[kb]
chunk_tokens = ${CHUNK_TOKENS:-32}"
ctl="$bin/confidantctl --addr unix:$work/confidantd.sock"
pid=""
start() { env "$@" "$bin/confidantd" --config "$work/confidantd.toml" 2>>"$work/daemon.log" & pid=$!; wait_healthy $ctl; }
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
start
$ctl kb --tenant bench import "$work/data/covid-kb.jsonl" >&2
sleep 70 # the optimiser indexes the new points
stop
# Each query's top 5 article ids, three CLI calls at a time.
search() {
  python3 - "$ctl" "$1" "$2" <<'PY'
import json, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
ctl, queries, out = sys.argv[1].split(), sys.argv[2], sys.argv[3]
def top5(q):
    r = subprocess.run(ctl + ["--json", "kb", "--tenant", "bench", "search", "--limit", "5", q["query"]],
                       capture_output=True, text=True, check=True)
    return {"expected": q["expected"], "top": [h["article_id"] for h in json.loads(r.stdout)]}
rows = [json.loads(l) for l in open(queries)]
with ThreadPoolExecutor(3) as ex, open(out, "w") as f:
    for row in ex.map(top5, rows):
        f.write(json.dumps(row) + "\n")
PY
}
for v in $VALUES; do
  start "CONFIDANT__$SETTING=$v"
  search "$work/data/covid-queries.jsonl" "$work/covid-$v.jsonl"
  search "$work/utterances.jsonl" "$work/utterances-$v.jsonl"
  stop
done
python3 - "$work" "$SETTING" $VALUES <<'PY'
import json, sys
work, setting, values = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = lambda name: [json.loads(l) for l in open(f"{work}/{name}.jsonl")]
ref = rows(f"utterances-{values[0]}")
for v in values:
    covid, utt = rows(f"covid-{v}"), rows(f"utterances-{v}")
    share = lambda hit, rs: round(sum(map(hit, rs)) / len(rs), 3)
    print(json.dumps({
        setting.lower(): v,
        "covid_recall_at_1": share(lambda r: r["top"][:1] != [] and r["top"][0] in r["expected"], covid),
        "covid_recall_at_5": share(lambda r: bool(set(r["top"]) & set(r["expected"])), covid),
        "utterances": len(utt),
        "top1_as_first": share(lambda p: p[0]["top"][:1] == p[1]["top"][:1], list(zip(ref, utt))),
        "first_top1_in_top5": share(lambda p: p[0]["top"][:1] != [] and p[0]["top"][0] in p[1]["top"], list(zip(ref, utt))),
        "top5_as_first": share(lambda p: p[0]["top"] == p[1]["top"], list(zip(ref, utt))),
    }))
PY
