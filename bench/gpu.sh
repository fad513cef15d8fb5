#!/usr/bin/env bash
# The first GPU hour: every check a scarce GPU slot should answer, in one prepared run of at most
# 8 minutes on one H100/H200. No network: the corpus is synthetic, made on the machine.
#
#   bench/gpu.sh                 # on the GPU machine: results under $OUT (else bench/results/gpu)
#   bench/gpu.sh --cpu-smoke     # the same steps at tiny sizes on the CPU (in `make test`)
#   bench/gpu.sh --out DIR       # results elsewhere
#
# Steps, in order, each under its own timeout (and the time left), so one failure or hang does
# not eat the rest: env, gpt, gpt-modern, families, fsdp, resume, pipeline (bench/gpu_check.py
# says what each does). Each step appends its JSON record to results.jsonl the moment it has it,
# so a cut run still returns what it had; table.md (the README's table) and gpu.log come last.
#
# On the lent GPU machines (Python 3.12, torch, lightning, pyarrow ... but no pydantic, mlflow,
# ...): bench/gpu_wheels.sh here first, then run this with `.whl` carried; the wheels found
# there are installed under /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=()
OUT_DIR="${OUT:-bench/results/gpu}"
BUDGET=480 # seconds for every step together
while (($#)); do
  case "$1" in
    --cpu-smoke) SMOKE=(--cpu-smoke); BUDGET=150; OUT_DIR="${OUT:-bench/results/gpu-smoke}" ;;
    --out) OUT_DIR="$2"; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
# the wheels bench/gpu_wheels.sh fetched, where this Python lacks what they hold (a lent GPU machine)
if ! "$PY" -c "import pydantic, datasketch, rouge_score" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "bench/gpu.sh: the wheels in .whl did not install" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 LLM_PIPELINE_TRACKING=off TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR/results.jsonl" "$OUT_DIR/table.md"
LOG="$OUT_DIR/gpu.log"
: >"$LOG"
deadline=$((SECONDS + BUDGET))

records() { # how many records results.jsonl holds for step $1
  grep -c "\"step\": \"$1\"" "$OUT_DIR/results.jsonl" 2>/dev/null || true
}

step() { # step NAME LIMIT: run one step under min(LIMIT, time left); record it if it could not
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "{\"step\": \"$name\", \"ok\": false, \"error\": \"skipped: no time left in the ${BUDGET} s\"}" >>"$OUT_DIR/results.jsonl"
    return
  fi
  echo "== $name (at most ${limit} s)" | tee -a "$LOG"
  local before
  before=$(records "$name")
  timeout -k 10 "$limit" "$PY" bench/gpu_check.py "$name" --out "$OUT_DIR" "${SMOKE[@]}" >>"$LOG" 2>&1
  local rc=$?
  if [[ "$(records "$name")" == "$before" ]]; then
    local why="exit $rc"
    ((rc == 124 || rc == 137)) && why="timed out after ${limit} s"
    local last
    last=$(grep -v '^\s*$' "$LOG" | tail -n 1 | tr -d '"\\' | cut -c1-300)
    echo "{\"step\": \"$name\", \"ok\": false, \"error\": \"$why: $last\", \"seconds\": $limit}" >>"$OUT_DIR/results.jsonl"
  fi
}

step env 60
step gpt 150
step gpt-modern 120
step families 90
step fsdp 120
step resume 150
step pipeline 150
"$PY" bench/gpu_check.py table --out "$OUT_DIR" "${SMOKE[@]}"
# the exit status says whether every step held
! grep -q '"ok": false' "$OUT_DIR/results.jsonl"
