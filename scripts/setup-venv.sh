#!/usr/bin/env bash
# Create .venv (if needed) and install bebert with everything its demo and tests use.
# torch is installed first and pinned: an unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,demo,plot,bench]"
python -c "import bebert_cli, torch; print('bebert', bebert_cli.__version__, '| torch', torch.__version__)"
