#!/usr/bin/env bash
# Wheels for bench/gpu.sh on a lent GPU machine, fetched here (it has no network there): the
# packages the stage CLIs import that its image (Python 3.12 with torch, lightning, pyarrow,
# pandas, tokenizers, transformers, scikit-learn, sacrebleu ...) lacks, at the versions of this
# venv. They land in .whl/ (git-ignored through .git/info/exclude); carry `.whl` with the run and
# gpu.sh installs them under /tmp/site. MLflow, Prefect and DVC are not needed: gpu.sh runs the
# stages with tracking off and without the flow.
#
#   bench/gpu_wheels.sh            # then, on the machine: bench/gpu.sh  (carry: .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection pysword python-debian zstandard datasketch
  rouge-score nltk)
PY=.venv/bin/python
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$name==$version" 2>/dev/null; then
    # no wheel on PyPI (an sdist only): pure Python, so a wheel built here installs there too
    "$PY" -m pip wheel -q --no-deps -w .whl "$name==$version"
  fi
done
ls -1 .whl
du -sh .whl
