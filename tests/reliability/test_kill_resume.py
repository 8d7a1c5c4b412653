"""`kill -9` in the middle of a real training run, then `--resume`: the periodic state survives intact,
the output appears only once complete, and the resumed result is byte-identical to an uninterrupted
run with the same options. (Ctrl-C / exit 130 is covered by tests/cli; this is the signal nothing can catch.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    bebert, child_env, dead_pid, file_sig, leftovers, load_state_file, run, st_content, the_error, tree,
    wait_until,
)

# 61 training rows after the held-out slice -> 8 steps per epoch; a state file every 2 steps.
TRAIN = ["--task", "sst2", "--max-train-samples", "64", "--batch-size", "8", "--max-seq-length", "16",
         "--save-every", "2", "--seed", "5"]


def start(argv, log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    proc = subprocess.Popen(bebert(*argv), stdout=fh, stderr=subprocess.STDOUT, env=child_env())
    fh.close()
    return proc


def kill_9_after_rewrites(argv, state: Path, log: Path, rewrites: int = 2) -> subprocess.Popen:
    """Start a run, wait until its state file has been written and then replaced `rewrites` times, kill -9."""
    proc = start(argv, log)
    wait_until(lambda: file_sig(state) is not None, proc=proc, what=f"{state.name} to appear")
    for _ in range(rewrites):
        sig = file_sig(state)
        wait_until(lambda: file_sig(state) not in (None, sig), proc=proc, what=f"{state.name} to be rewritten")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    return proc


def finish(proc: subprocess.Popen, log: Path) -> None:
    proc.wait(timeout=600)
    assert proc.returncode == 0, log.read_text()[-3000:]


def check_killed_state(out: Path, state: Path) -> dict:
    assert not out.exists(), "the output appeared before the run completed"
    meta = load_state_file(state)  # every tensor readable: the periodic checkpoint is whole
    assert meta["global_step"] >= 2 and meta["global_step"] % 2 == 0
    # kill -9 ran no cleanup: the lock file is still there, yet the kernel has released the lock.
    assert (out.parent / f".{out.name}.lock").exists()
    return meta


def test_kill_9_binarize_then_resume_is_identical_and_locked(tiny_bert, small_glue, tmp_path):
    """kill -9 mid-training; a killed publication's leftovers; --resume, during which a second writer of
    the same output is refused (lock) without disturbing it; the result equals an uninterrupted run."""
    from bebert_cli.atomic import output_lock
    from bebert_cli.errors import OutputLocked

    argv = ["binarize", tiny_bert, "--data-dir", small_glue, *TRAIN, "--epochs", "4"]
    straight, out = tmp_path / "straight", tmp_path / "killed"
    reference = start([*argv, "-o", straight], tmp_path / "straight.log")  # runs alongside the killed one
    work = tmp_path / ".killed.bebert-run"
    state = work / "train_state.safetensors"
    kill_9_after_rewrites([*argv, "-o", out], state, tmp_path / "killed.log")
    meta = check_killed_state(out, state)

    # What a kill -9 during publication leaves: a half-copied temporary directory of a dead process.
    stale = tmp_path / f".killed.tmp-{dead_pid()}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")

    resumed = start([*argv, "-o", out, "--resume"], tmp_path / "resumed.log")
    sig = file_sig(state)
    wait_until(lambda: file_sig(state) != sig, proc=resumed, what="the resumed run to save its state")
    os.kill(resumed.pid, signal.SIGSTOP)  # frozen while it holds the lock
    try:
        assert resumed.poll() is None and work.exists()
        second = run(*argv, "-o", out)
        assert second.returncode == 1
        assert "another bebert process is writing" in the_error(second.stderr)
        with pytest.raises(OutputLocked):  # the refused writer did not take the holder's lock away
            with output_lock(out):
                pass
    finally:
        os.kill(resumed.pid, signal.SIGCONT)
    finish(resumed, tmp_path / "resumed.log")
    assert "Resuming" in (tmp_path / "resumed.log").read_text()
    assert meta["global_step"] < 32

    finish(reference, tmp_path / "straight.log")
    assert st_content(out / "model.safetensors") == st_content(straight / "model.safetensors")
    assert json.loads((out / "eval_results.json").read_text())["splits"] == \
        json.loads((straight / "eval_results.json").read_text())["splits"]
    assert not stale.exists(), "the next writer removes what a killed publication left"
    assert leftovers(out) == [] and not work.exists()


@pytest.mark.slow
def test_kill_9_finetune_then_resume_is_identical(tiny_bert, small_glue, tmp_path):
    argv = ["finetune", tiny_bert, "--data-dir", small_glue, *TRAIN, "--epochs", "4"]
    straight, out = tmp_path / "straight", tmp_path / "killed"
    reference = start([*argv, "-o", straight], tmp_path / "straight.log")
    state = tmp_path / ".killed.bebert-run" / "train_state.safetensors"
    kill_9_after_rewrites([*argv, "-o", out], state, tmp_path / "killed.log", rewrites=3)
    check_killed_state(out, state)

    proc = run(*argv, "-o", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    finish(reference, tmp_path / "straight.log")
    # A plain fine-tuned checkpoint (one metadata key) is byte-identical outright.
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert leftovers(out) == [] and not (tmp_path / ".killed.bebert-run").exists()


ENSEMBLE = ["--task", "sst2", "--members", "2", "--max-train-samples", "48", "--epochs", "2", "--batch-size", "8",
            "--max-seq-length", "16", "--save-every", "2", "--seed", "5"]


def test_kill_9_ensemble_then_resume_is_identical(tiny_bert, small_glue, tmp_path):
    argv = ["ensemble", tiny_bert, "--data-dir", small_glue, *ENSEMBLE]
    straight, out = tmp_path / "straight", tmp_path / "ENS"
    reference = start([*argv, "-o", straight], tmp_path / "straight.log")
    work = tmp_path / ".ENS.bebert-run"
    # Killed while member-1 trains: member-0 is finished and kept, member-1 has a periodic state.
    kill_9_after_rewrites([*argv, "-o", out], work / "member-1" / "train_state.safetensors", tmp_path / "killed.log")
    assert not out.exists()
    load_state_file(work / "member-1" / "train_state.safetensors")
    assert (work / "member-0" / "packed" / "model.safetensors").is_file()

    proc = run(*argv, "-o", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    finish(reference, tmp_path / "straight.log")
    for k in range(2):
        assert st_content(out / f"member-{k}" / "model.safetensors") == \
            st_content(straight / f"member-{k}" / "model.safetensors")
    got = json.loads((out / "ensemble.json").read_text())["members"]
    want = json.loads((straight / "ensemble.json").read_text())["members"]
    assert [m["weight"] for m in got] == [m["weight"] for m in want]
    assert leftovers(out) == [] and not work.exists()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_random_moments_until_done(tiny_bert, small_glue, tmp_path, seed):
    """Kill -9 binarize at random moments (loading, training, evaluating, publishing) several times over,
    resuming each time; the final model is still the uninterrupted one."""
    rng = random.Random(seed)
    argv = ["binarize", tiny_bert, "--data-dir", small_glue, *TRAIN, "--epochs", "6"]
    straight, out = tmp_path / "straight", tmp_path / "killed"
    t0 = time.monotonic()
    assert run(*argv, "-o", straight).returncode == 0
    duration = time.monotonic() - t0
    kills = 0
    for attempt in range(6):
        extra = ["--resume"] if attempt else []
        proc = start([*argv, "-o", out, *extra], tmp_path / f"run{attempt}.log")
        time.sleep(rng.uniform(0.15, 0.85) * duration)  # a fresh run takes about `duration`
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            assert not out.exists() or (out / "model.safetensors").is_file()  # whole or absent
            if out.exists():
                break  # killed after publishing (while dropping the state)
            continue
        assert proc.returncode == 0, (tmp_path / f"run{attempt}.log").read_text()[-2000:]
        break
    if not out.exists():
        assert run(*argv, "-o", out, "--resume").returncode == 0
    assert kills >= 1
    assert st_content(out / "model.safetensors") == st_content(straight / "model.safetensors")
    assert tree(out).keys() == tree(straight).keys()


def test_packed_weights_file_is_byte_reproducible(packed_ckpt, tmp_path):
    from bebert_cli.quant.packed import load_packed, save_packed

    model = load_packed(packed_ckpt)
    blobs = set()
    for k in range(12):
        d = tmp_path / str(k)
        d.mkdir()
        save_packed(model, d, model.bebert_recipe, model.bebert_plan)
        blobs.add((d / "model.safetensors").read_bytes())
    assert len(blobs) == 1, f"{len(blobs)} different files from one model"
