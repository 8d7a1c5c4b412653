"""A full disk or an unwritable output: one clear error, nothing partial left, the previous output intact.

Disk full is simulated two ways: a file-size limit (`ulimit -f`: writes fail with EFBIG, SIGXFSZ ignored)
and, where this machine allows mounting, a real 4 MiB tmpfs (ENOSPC).
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.reliability.conftest import child_env, leftovers, limits, run_batch, the_error, tree

FSIZE = 128 * 1024  # smaller than any weights or state file, larger than the small JSON files
TRAIN = ["--max-train-samples", "32", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16"]
HAVE_ENSEMBLE = importlib.util.find_spec("bebert_cli.ensemble") is not None and \
    importlib.util.find_spec("bebert_cli.ensemble.model") is not None


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False):
    """A size-limited file system at `path`, or None where this machine does not allow mounting one."""
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"bebert-test-{uuid.uuid4().hex[:8]}", str(path)],
                        capture_output=True).returncode == 0
    try:
        yield path if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _remount_ro(path: Path) -> bool:
    return subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def file_size_limit_runs(packed_ckpt, tiny_bert, small_glue, tmp_path_factory):
    """Each command replaces an existing output (--overwrite) under `ulimit -f 128K`."""
    root = tmp_path_factory.mktemp("fsize")
    cases, previous = {}, {}
    for name, src in (("binarize", packed_ckpt), ("finetune", tiny_bert), ("ensemble_from", packed_ckpt)):
        if name == "ensemble_from" and not HAVE_ENSEMBLE:
            continue
        out = root / name / "out"
        shutil.copytree(src, out)
        previous[name] = (out, tree(out))
    cases["binarize"] = ["binarize", tiny_bert, "--task", "sst2", "-o", previous["binarize"][0], "--overwrite",
                         "--data-dir", small_glue, *TRAIN]
    cases["finetune"] = ["finetune", tiny_bert, "--task", "sst2", "-o", previous["finetune"][0], "--overwrite",
                         "--data-dir", small_glue, *TRAIN]
    if HAVE_ENSEMBLE:  # no training state: the failure comes while publishing (copying the members)
        second = root / "member2"
        shutil.copytree(packed_ckpt, second)
        cases["ensemble_from"] = ["ensemble", "--from", packed_ckpt, second, "--task", "sst2", "-o",
                                  previous["ensemble_from"][0], "--overwrite", "--data-dir", small_glue]
    return run_batch(cases, preexec=limits(fsize=FSIZE)), previous


@pytest.mark.parametrize("command", ["binarize", "finetune", "ensemble_from"])
def test_file_size_limit_keeps_the_previous_output(file_size_limit_runs, command):
    results, previous = file_size_limit_runs
    r = results[command]
    out, before = previous[command]
    assert r["code"] == 1, r["stderr"][-2000:]
    line = the_error(r["stderr"])
    assert "File too large" in line and "cannot write" in line, line
    assert tree(out) == before, "the previous output changed"
    assert leftovers(out) == [], "temporary, moved-aside or lock files left behind"
    work = out.parent / f".{out.name}.bebert-run"
    assert not work.exists() or not any(work.rglob("*")), "a partial state or temporary file was left"


def test_full_tmpfs_keeps_the_previous_output(packed_ckpt, tiny_bert, small_glue, tmp_path):
    with tmpfs(tmp_path / "small", "4m") as fs:
        if fs is None:
            pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
        out = fs / "out"
        shutil.copytree(packed_ckpt, out)
        before = tree(out)
        r = run_batch({"binarize": ["binarize", tiny_bert, "--task", "sst2", "-o", out, "--overwrite",
                                    "--data-dir", small_glue, *TRAIN]})["binarize"]
        assert r["code"] == 1, r["stderr"][-2000:]
        assert "No space left on device" in the_error(r["stderr"])
        assert tree(out) == before
        assert leftovers(out) == []
        # Temporary files of the failed write were removed: only the old output (and perhaps an empty
        # state directory) remain, so the space is given back.
        assert sum(f.stat().st_size for f in fs.rglob("*") if f.is_file()) == sum(map(len, before.values()))


def test_unwritable_outputs_fail_fast_with_a_clear_error(tiny_bert, small_glue, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    cases = {
        "binarize_under_a_file": ["binarize", tiny_bert, "--task", "sst2", "-o", tmp_path / "a_file" / "out",
                                  "--data-dir", small_glue, *TRAIN],
        "finetune_under_a_file": ["finetune", tiny_bert, "--task", "sst2", "-o", tmp_path / "a_file" / "deep" / "out",
                                  "--data-dir", small_glue, *TRAIN],
    }
    with tmpfs(tmp_path / "ro", "1m") as fs:
        if fs is not None and _remount_ro(fs):
            cases["binarize_read_only_fs"] = ["binarize", tiny_bert, "--task", "sst2", "-o", fs / "out",
                                              "--data-dir", small_glue, *TRAIN]
        results = run_batch(cases)
    for name, r in results.items():
        assert r["code"] == 2, (name, r["stderr"][-2000:])
        line = the_error(r["stderr"])
        assert "cannot create output" in line, line
        assert ("is not a directory" if "under_a_file" in name else "is not writable") in line, line
    assert (tmp_path / "a_file").read_text() == "not a directory"


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root ignores directory permissions (covered by the read-only tmpfs case)")
def test_unwritable_parent_directory(tiny_bert, small_glue, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = run_batch({"x": ["binarize", tiny_bert, "--task", "sst2", "-o", locked / "out", "--data-dir", small_glue]})["x"]
    assert r["code"] == 2 and "is not writable" in the_error(r["stderr"])


PUBLISH = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bebert_cli.atomic import atomic_output_dir
    out = Path(sys.argv[1])
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"x" * int(sys.argv[2]))
""")


@pytest.mark.parametrize("exchange", ["renameat2", "two renames"])
def test_publication_that_hits_the_limit_publishes_nothing(tmp_path, exchange):
    """The publish step shared by every command, in a process of its own under `ulimit -f`."""
    script = PUBLISH if exchange == "renameat2" else PUBLISH.replace(
        "from bebert_cli.atomic import atomic_output_dir",
        "import bebert_cli.atomic as a; a._exchange = lambda x, y: False; atomic_output_dir = a.atomic_output_dir")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old weights")
    before = tree(out)
    proc = subprocess.run([sys.executable, "-c", script, str(out), str(2 * FSIZE)], capture_output=True, text=True,
                          env=child_env(), preexec_fn=limits(fsize=FSIZE))
    assert proc.returncode == 1 and "File too large" in proc.stderr
    assert "OutputWriteError" in proc.stderr and "is unchanged" in proc.stderr
    assert tree(out) == before and leftovers(out) == []
    ok = subprocess.run([sys.executable, "-c", script, str(out), "100"], capture_output=True, text=True,
                        env=child_env(), preexec_fn=limits(fsize=FSIZE))
    assert ok.returncode == 0, ok.stderr
    assert (out / "model.safetensors").read_bytes() == b"x" * 100 and leftovers(out) == []
