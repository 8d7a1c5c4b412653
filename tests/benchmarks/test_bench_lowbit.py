"""benchmarks/bench_lowbit.py on the tiny shape: both 4-bit kernels timed (and equal) per linear and row
count, or one clear error on a CPU without the avx512_vpopcntdq level."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bebert_cli import kernels

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lowbit.py"


def test_both_kernels_are_timed_per_shape(tmp_path):
    out = tmp_path / "lowbit.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shapes", "tiny", "--rows", "3,40", "--repeats", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    if "avx512_vpopcntdq" not in kernels.available_backends():
        assert proc.returncode == 2 and proc.stderr.strip().startswith("Error: this CPU has no avx512_vpopcntdq")
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["M"], r["K"], r["N"]) for r in rows] == [(m, k, n) for k, n in ((64, 64), (64, 128), (128, 64))
                                                         for m in (3, 40)]
    assert all(r["tables_ms"] > 0 and r["dot_ms"] > 0 and r["tables_speedup"] > 0 for r in rows)
