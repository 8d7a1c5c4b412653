"""One writer per output directory (`bebert_cli.atomic.output_lock`) and recovery from killed publications.

The end-to-end case (a second `bebert binarize` into the output of a running one is refused while the
first completes) is part of test_kill_resume.py::test_kill_9_binarize_then_resume_is_identical_and_locked.
These cases pin down the lock's semantics with real processes, without training anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bebert_cli.atomic import atomic_output_dir, output_lock
from bebert_cli.errors import OutputLocked
from tests.reliability.conftest import dead_pid, leftovers, wait_until

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bebert_cli.atomic import output_lock
    with output_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(600)
""")


def holder(out) -> subprocess.Popen:
    """Another process holding the lock of `out` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_and_a_refusal_does_not_unlock(tmp_path):
    out = tmp_path / "out"
    proc = holder(out)
    try:
        for _ in range(3):  # each refused contender must leave the holder's lock in force
            with pytest.raises(OutputLocked, match="another bebert process is writing"):
                with output_lock(out):
                    pass
        assert (tmp_path / ".out.lock").exists()
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_releases_the_lock_and_the_leftover_lock_file_is_harmless(tmp_path):
    out = tmp_path / "out"
    proc = holder(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".out.lock").exists()  # no cleanup ran
    with output_lock(out):  # the kernel released the flock with the process
        pass
    assert leftovers(out) == []


def test_contender_that_opened_a_just_removed_lock_file_does_not_get_in(tmp_path, monkeypatch):
    """Race: between a contender's open() and flock(), the holder finishes (removing the lock file) and a
    new writer creates and locks a fresh one. The contender's flock on the removed file succeeds; it must
    notice that file is no longer the lock and be refused by the real one."""
    import fcntl  # the lock (filelock) calls fcntl.flock

    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    lock.touch()  # left by the finishing holder
    real_flock, procs = fcntl.flock, []

    def racing_flock(fd, op):
        if not procs:
            lock.unlink()  # the holder finished...
            procs.append(holder(out))  # ...and another process became the writer
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", racing_flock)
    try:
        with pytest.raises(OutputLocked):
            with output_lock(out):
                pass
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_killed_publication_leftovers_are_cleared_by_the_next_writer(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("current output")
    dead = dead_pid()
    (tmp_path / f".out.tmp-{dead}").mkdir()  # half-written new output of a killed process
    (tmp_path / f".out.tmp-{dead}" / "model.safetensors").write_bytes(b"partial")
    live = tmp_path / f".out.tmp-{os.getppid()}"  # another live process's: not ours to touch
    live.mkdir()
    with output_lock(out):
        pass
    assert not (tmp_path / f".out.tmp-{dead}").exists() and live.exists()
    assert (out / "keep").read_text() == "current output"


def test_output_moved_aside_by_a_killed_publication_is_put_back(tmp_path):
    """Without an atomic exchange, publishing is two renames; a kill -9 between them leaves the previous
    output as .OUT.old-PID and no OUT: the next writer restores it before doing anything else."""
    out = tmp_path / "out"
    old = tmp_path / f".out.old-{dead_pid()}"
    old.mkdir()
    (old / "keep").write_text("previous output")
    with output_lock(out):
        assert (out / "keep").read_text() == "previous output"
    assert not old.exists() and leftovers(out) == []


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_an_output_keeps_the_old_one_until_the_new_one_is_complete(tmp_path, monkeypatch, exchange):
    import bebert_cli.atomic as atomic

    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # file systems without RENAME_EXCHANGE
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError("crash while writing")
    assert (out / "v").read_text() == "1" and leftovers(out) == []
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "v").write_text("2")
    assert (out / "v").read_text() == "2" and leftovers(out) == []


def test_a_filesystem_without_flock_is_an_error_not_a_lock_that_outlives_its_writer(tmp_path, monkeypatch):
    """No soft (file-exists) fallback: such a lock is not dropped by the kernel when its writer is killed,
    and would refuse every later writer of the output."""
    import errno
    import fcntl

    from bebert_cli.atomic import OutputWriteError

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(OutputWriteError, match="cannot write"):
        with output_lock(tmp_path / "out"):
            pass
