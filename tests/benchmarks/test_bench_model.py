"""benchmarks/bench_model.py end to end on the tiny shape: every row in the JSON, errors as one line.

Timings are not checked (1 repeat on a shared machine means nothing); what is checked is that the
benchmark runs every row it promises, once per compiled backend, with ratios against the
references of the same run, and that the ONNX Runtime rows are there (with sane logits) exactly
when onnxruntime is importable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_model.py"
sys.path.insert(0, str(SCRIPT.parent))
import ort_baseline  # noqa: E402

HAVE_ORT = ort_baseline.missing() is None  # the benchmark's own test, so the two cannot disagree


def _run(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = _run("--shapes", "tiny", "--inputs", "2x16,1x8", "--repeats", "1", "--warmup", "0", "--threads", "1",
                "--backends", "all", "--no-rss", "--profile", "--workdir", str(out / "work"), "--json", str(out / "r.json"))
    return json.loads((out / "r.json").read_text()), proc, out / "work"


def test_every_row_once_per_backend_with_ratios(bench):
    from bebert_cli import kernels

    results, proc, _ = bench
    compiled = [b for b in kernels.available_backends() if b != "torch"]
    assert results["meta"]["backends"] == compiled
    packed = ["packed 1-1-1", "packed 1-1-1 unfused", "packed w1a4", "packed w1a4 unfused", "packed w1a8",
              "ensemble 2x w1a4"]
    expected = ["fp32 eager", "fp32 sdpa", "int8 dynamic"] + (["ORT fp32", "ORT int8"] if HAVE_ORT else [])
    expected += [f"{row} [{b}]" for b in compiled for row in packed]
    for inp in ("2x16", "1x8"):
        rows = [r for r in results["latency"] if r["input"] == inp and r["model"] == "tiny"]
        assert [r["row"] for r in rows] == expected
        for r in rows:
            assert r["runs"] == 1 and len(r["all_ms"]) == 1 and r["median_ms"] > 0
            fp32 = next(x for x in rows if x["row"] == "fp32 eager")
            assert r["x_fp32"] == pytest.approx(fp32["median_ms"] / r["median_ms"])
            assert (r["x_ort_int8"] is not None) == HAVE_ORT
        assert next(r for r in rows if r["row"] == "int8 dynamic")["x_int8"] == 1.0
        # one markdown table per input shape, every row in it
        table = proc.stdout.split(f"### tiny, {inp.replace('x', ' x ')}")[1].split("###")[0]
        assert all(f"| {row} |" in table for row in expected)
    ens = results["ensemble_vs_members"]
    assert {(e["input"], e["backend"]) for e in ens} == {(i, b) for i in ("2x16", "1x8") for b in compiled}
    assert "load average" in proc.stdout.splitlines()[0] and results["meta"]["loadavg_end"]
    for inp in ("2x16", "1x8"):  # --profile: 1-1-1, w1a4, w1a8 broken down on every backend, kernel calls counted
        for b in compiled:
            p = results["profile"][f"tiny {inp} [{b}]"]
            # 2 fused layers x (4 GEMMs + Bi-Attention) + the binary pooler dense
            assert p["kernel_calls_per_forward"] == 2 * 5 + 1 and p["python_us_per_kernel_call"] > 0
            for row in ("packed w1a4", "packed w1a8"):
                p = results["profile"][f"{row}, tiny {inp} [{b}]"]
                # 2 layers x (6 linears + the 2 integer attention products) + the pooler dense
                assert p["kernel_calls_per_forward"] == 2 * 8 + 1 and p["linears"] > 0 and p["attention"] > 0
        assert f"| packed w1a4, tiny {inp} [{compiled[0]}] |" in proc.stdout
    skipped = [line for line in proc.stderr.splitlines() if "ONNX Runtime rows skipped" in line]
    assert len(skipped) == (0 if HAVE_ORT else 1), skipped


@pytest.mark.skipif(not HAVE_ORT, reason="the bench extra (onnx, onnxruntime) is not installed")
def test_ort_graph_is_optimized_and_int8_close_to_fp32(bench):
    results, _, _ = bench
    info = results["ort"]["tiny"]
    assert info["fused_operators"].get("Attention") == 2  # one fused Attention per layer: the optimized graph
    assert info["check"]["ok"], info["check"]
    assert info["check"]["fp32_vs_torch_max_abs"] < 1e-3


def test_without_onnxruntime_the_ort_rows_are_skipped_with_one_line(bench, tmp_path):
    _, _, work = bench
    proc = _run("--shapes", "tiny", "--inputs", "1x8", "--repeats", "1", "--warmup", "0", "--threads", "1",
                "--no-rss", "--no-ort", "--workdir", str(work), "--json", str(tmp_path / "r.json"))
    results = json.loads((tmp_path / "r.json").read_text())
    assert [line for line in proc.stderr.splitlines() if "ONNX Runtime rows skipped" in line] == [
        "ONNX Runtime rows skipped: --no-ort"]
    assert not any(r["row"].startswith("ORT") for r in results["latency"])
    assert all(r["x_ort_int8"] is None for r in results["latency"])


@pytest.mark.slow  # over 15 s; moved out of the default suite to keep it under 15 minutes
def test_peak_memory_of_the_new_recipe_rows(bench):
    import bench_model

    _, _, work = bench
    paths = bench_model.build("tiny", work)
    kinds = ["packed w1a4", "ensemble 2x w1a4"]
    if HAVE_ORT:
        info = ort_baseline.build(paths["fp32"], work / "tiny" / "onnx", 2, 64)  # reused from the run above
        paths["ort_fp32"], paths["ort_int8"] = info["fp32"], info["int8"]
        kinds.append("ORT int8")
    for kind in kinds:
        rss = bench_model.measure_rss(kind, paths, 1, "scalar")
        assert rss is not None and rss["maxrss_mb"] > 0 and rss["rss_now_mb"] > 0


@pytest.mark.parametrize("args, message", [
    (["--backends", "nope"], "--backends: nope not available"),
    (["--inputs", "8by128"], "--inputs: '8by128' is not BATCHxSEQ"),
    (["--shapes", "gpt"], "--shapes: unknown"),
])
def test_bad_options_give_one_error_line(args, message):
    proc = _run(*args, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
