"""benchmarks/bench_threads.py on the tiny shape: a row per recipe and input, both settings timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_threads.py"


def test_every_recipe_and_input_gets_both_timings(tmp_path):
    out = tmp_path / "threads.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("BEBERT_SERIAL_MAX_TOKENS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shapes", "tiny", "--recipes", "bibert,w1a4", "--inputs",
                           "1x8,2x16", "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["recipe"], r["input"]) for r in rows] == [(a, b) for a in ("bibert", "w1a4") for b in ("1x8", "2x16")]
    assert all(r["one_thread_ms"] > 0 and r["threads_ms"] > 0 and r["threads"] == 2 for r in rows)
    assert "OMP_WAIT_POLICY=PASSIVE" in proc.stdout.splitlines()[0]
