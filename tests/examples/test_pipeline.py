"""examples/pipeline.sh runs end to end (tiny model, 40 training rows) and leaves every output it promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_pipeline_sh_runs(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "BEBERT_DATA_DIR": str(small_glue), "SAMPLES": "40", "EPOCHS": "1", "SEQ": "16",
           "GATE": "0.0", "MEMBERS": "2", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("HF_REPO", None)
    proc = subprocess.run(["bash", str(REPO / "examples" / "pipeline.sh"), str(tiny_bert), "sst2", str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for d in ("teacher", "w1a4", "ensemble", "w1a4-remote"):
        assert (out / d / "README.md").is_file(), d
    gate = json.loads((out / "w1a4-eval.json").read_text())
    assert gate["schema"] == "bebert.eval" and gate["passed"] is True
    assert f"gate: accuracy {gate['main_value']:.4f} on validation (packed runtime), passed True" in proc.stdout
    assert json.loads((out / "w1a4" / "bebert_run.json").read_text())["max_seq_length"] == 16
    assert "|" in (out / "report.md").read_text() and proc.stdout.strip().endswith(f"done: {out}")
