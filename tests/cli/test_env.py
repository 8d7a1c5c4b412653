"""`bebert env`: what a user pastes into a bug report, human and --json."""

import os

from tests.conftest import one_json, run_cli


def test_env_json_names_backend_versions_and_threads():
    info = one_json(run_cli("env", "--json", env={"BEBERT_KERNEL_BACKEND": ""}, check=0).stdout)
    assert {"torch", "transformers", "accelerate", "datasets", "safetensors"} <= set(info["packages"])
    assert all(info["packages"][p] for p in ("torch", "transformers", "accelerate", "datasets", "safetensors"))
    k = info["kernels"]
    assert k["backend"] == k["available"][0] and k["reason"] == "the best level this CPU supports"
    assert info["threads"]["torch_threads"] >= 1 and info["python"] and info["cpu"]["arch"]
    assert info["mixed_precision_auto"]["cpu"] in ("no", "bf16")


def test_env_says_when_a_backend_is_forced():
    info = one_json(run_cli("env", "--json", env={**os.environ, "BEBERT_KERNEL_BACKEND": "scalar"}, check=0).stdout)
    assert info["kernels"]["backend"] == "scalar" and "BEBERT_KERNEL_BACKEND=scalar" in info["kernels"]["reason"]
    info = one_json(run_cli("env", "--json", env={**os.environ, "BEBERT_KERNEL_BACKEND": "torch"}, check=0).stdout)
    assert info["kernels"]["backend"] == "torch" and "forced" in info["kernels"]["reason"]


def test_env_human_table():
    out = run_cli("env", check=0).stdout
    assert "kernel backend" in out and "OMP_WAIT_POLICY" in out and "transformers" in out
