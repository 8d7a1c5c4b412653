#!/usr/bin/env bash
# Set up a fresh machine and run the default test suite (slow tests: add `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
. .venv/bin/activate
export BEBERT_TEST_GLUE=${BEBERT_TEST_GLUE:-$(cd .. && pwd)/shared/data/glue}
exec python -m pytest "$@"
