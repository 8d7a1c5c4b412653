"""Shared pieces of the reliability suite: one tiny packed checkpoint, subprocess helpers, resource limits.

Every case runs the real CLI (`python -m bebert_cli ...`) in a subprocess. Cases that only check that a
bad input is refused run in batches: one interpreter runs `bebert_cli.cli.main.main(argv)` for each
case in turn (see `_cli_batch.py`), which keeps the suite fast while exercising the same entry point,
error mapping and stderr contract as a fresh process.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

HERE = Path(__file__).resolve().parent
# Single-threaded children: the machine is shared, and every run of a comparison uses the same setting.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
GiB = 1 << 30


def bebert(*args) -> list[str]:
    return [sys.executable, "-m", "bebert_cli", *map(str, args)]


def child_env(extra: dict | None = None) -> dict:
    return {**os.environ, **ENV, **(extra or {})}


def limits(*, fsize: int | None = None, address_space: int | None = None):
    """preexec_fn for subprocess: a file size limit (writes fail with EFBIG) and/or an address-space cap."""

    def apply():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


def run(*args, preexec=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Like tests.conftest.run_cli, with resource limits and the suite's environment."""
    if preexec is None:
        return run_cli(*args, env={**ENV, **(env or {})}, timeout=timeout)
    return subprocess.run(bebert(*args), capture_output=True, text=True, env=child_env(env), timeout=timeout,
                          preexec_fn=preexec)


def run_batch(cases: dict[str, list], *, preexec=None, env=None, timeout=600) -> dict[str, dict]:
    """Run many CLI invocations in one subprocess: {name: {"code", "stdout", "stderr"}}."""
    spec = {name: [str(a) for a in argv] for name, argv in cases.items()}
    proc = subprocess.run([sys.executable, str(HERE / "_cli_batch.py")], input=json.dumps(spec), capture_output=True,
                          text=True, env=child_env(env), timeout=timeout, preexec_fn=preexec)
    assert proc.returncode == 0, f"batch driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    report(results)
    return results


def report(results: dict[str, dict]) -> None:
    """With BEBERT_RELIABILITY_REPORT=FILE, append each case's exit code and last stderr line (for the docs table)."""
    target = os.environ.get("BEBERT_RELIABILITY_REPORT")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as fh:
        for name, r in results.items():
            lines = [ln for ln in r["stderr"].strip().splitlines() if ln.strip()]
            fh.write(json.dumps({"case": name, "code": r["code"], "last": lines[-1] if lines else ""}) + "\n")


def the_error(stderr: str) -> str:
    """The single `Error:` line a failure must print (no traceback, nothing after it)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error: "), f"expected an Error: line, got {stderr[-2000:]!r}"
    assert sum(ln.startswith("Error: ") for ln in lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes: compare two of these for 'byte-identical'."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


def st_content(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (parsed header, tensor bytes).

    Two files with equal content can still differ in raw bytes: safetensors writes the `__metadata__`
    map in a random key order when it has more than one key (packed checkpoints have two), so compare
    this instead of the raw file; see test_packed_weights_file_is_byte_reproducible.
    """
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def leftovers(output: Path) -> list[str]:
    """Hidden siblings a write of `output` may leave: temp dirs, moved-aside old outputs, the lock file."""
    prefix = f".{output.name}."
    return sorted(p.name for p in output.parent.iterdir()
                  if p.name.startswith(prefix) and not p.name.endswith(".bebert-run"))


def dead_pid() -> int:
    """A process id that belonged to a process that has exited (as after kill -9)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def file_sig(path: Path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def wait_until(predicate, *, proc=None, timeout=300.0, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}; make it longer")
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}")


def load_state_file(path: Path) -> dict:
    """Read every tensor and the metadata of a training state file: proof that it is whole."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["meta"])
        n = sum(1 for k in f.keys() if f.get_tensor(k) is not None)
    assert n > 0
    return meta


TINY_BINARIZE = ["--max-train-samples", "32", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16"]


@pytest.fixture(scope="session")
def packed_ckpt(tiny_bert, small_glue, tmp_path_factory) -> Path:
    """A real packed binary checkpoint made by `bebert binarize` (read-only: copy it before mutating)."""
    out = tmp_path_factory.mktemp("packed") / "bin"
    proc = run("binarize", tiny_bert, "--task", "sst2", "-o", out, "--data-dir", small_glue, *TINY_BINARIZE)
    assert proc.returncode == 0, proc.stderr
    return out
