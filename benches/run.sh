#!/usr/bin/env bash
# Side-by-side embedding throughput: Confidant and sentence-transformers (PyTorch)
# in the same run, same sentences, same threads and batch size. Prints both JSON lines and
# the ratio. Run on an idle machine: a concurrent compile skews both figures.
#
#   benches/run.sh [--dtype int8|bf16] [--runs N]
#
# Needs the default model (models/install-default), ../shared/bench/, and a Python with
# torch and sentence-transformers: set ST_PYTHON (default: /opt/st-venv/bin/python), e.g.
#   python3 -m venv /opt/st-venv && /opt/st-venv/bin/pip install torch sentence-transformers
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
threads="${THREADS:-2}"
batch="${BATCH:-32}"
model="${CONFIDANT_MODEL_DIR:-models/all-MiniLM-L6-v2}"
sentences="${SENTENCES:-../shared/bench/utterances_2000.txt}"
st_python="${ST_PYTHON:-/opt/st-venv/bin/python}"
[ -f "$sentences" ] || { echo "run.sh: $sentences not found (needs ../shared)" >&2; exit 1; }
models/install-default >/dev/null
# The dev profile optimises every dependency (Candle, gemm, tokenizers) at opt-level 3,
# which is where the time goes; it shares the build with the test suite.
cargo build --locked --bins >&2
ours=$(RAYON_NUM_THREADS="$threads" target/debug/embed-throughput "$model" "$sentences" --batch "$batch" "$@")
echo "$ours"
if [ -x "$st_python" ]; then
  theirs=$("$st_python" ../shared/bench/st_baseline.py "$model" "$sentences" --threads "$threads" --batch "$batch")
  echo "$theirs"
  python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"ratio confidant/sentence-transformers: {a['sent_per_s_median'] / b['sent_per_s_median']:.2f}x "
      f"({a['sent_per_s_median']} vs {b['sent_per_s_median']} sentences/s)")
PY
else
  echo "run.sh: $st_python not found: baseline skipped" >&2
fi
