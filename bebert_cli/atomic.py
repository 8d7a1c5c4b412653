"""Outputs that appear whole or not at all, and one writer per output directory.

A command writes into a hidden temporary sibling of its output directory and renames it into
place at the end; an existing output is only replaced with --overwrite, and is kept until the
new one is complete (on Linux the two are swapped in one atomic rename). A lock file refuses a
second concurrent writer of the same output; the kernel drops the lock of a killed process, and
the next writer clears what a killed publish left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from pathlib import Path

import filelock

from bebert_cli.errors import BebertError, OutputLocked, UsageError

# Failures of the disk rather than of the program: reported as one clear line naming the output.
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


class OutputWriteError(BebertError, OSError):
    """The disk refused a write (full, file too large, read-only, no permission); exit code 1.

    Also an OSError (with errno set), so callers that handle OS errors keep working.
    """

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else ""


def _write_error(target: Path, exc: OSError, note: str = "") -> OutputWriteError:
    what = exc.strerror or str(exc)
    space = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # then the file it happened on says nothing
    if exc.filename and not space and Path(str(exc.filename)) != target:
        what += f" ({exc.filename})"
    err = OutputWriteError(f"cannot write {target}: {what}{note}")
    err.errno, err.strerror = exc.errno, exc.strerror
    return err


def work_dir_for(output: Path) -> Path:
    """Where an interrupted run keeps its resumable state (beside the output, never inside)."""
    return output.parent / f".{output.name}.bebert-run"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def _clean_after_killed_publish(output: Path) -> None:
    """Under the lock: remove `.OUT.tmp-PID` dirs of dead processes; put back a moved-aside previous output."""
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.(tmp|old)-(\d+)$")
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or _pid_alive(int(m.group(2))):
            continue
        with contextlib.suppress(OSError):
            if m.group(1) == "old" and not output.exists() and entry.is_dir() and not entry.is_symlink():
                os.replace(entry, output)  # killed between moving the old output aside and publishing the new one
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@contextlib.contextmanager
def output_lock(output: Path):
    """Hold an exclusive lock on `.OUT.lock` beside `output`; a second writer gets OutputLocked.

    The lock is `filelock`'s flock (the kernel drops it with a killed process). The lock file is
    removed on release while still locked; a contender that opened the removed file finds it unlinked
    after locking it (filelock checks) and does not get in, so unlinking never lets two writers in at
    once. A contender that fails never removes anything.
    """
    output = Path(output)
    make_parent(output)
    lock_path = output.parent / f".{output.name}.lock"
    # flock only: a soft (file-exists) lock would outlive a killed process and refuse every later writer
    lock = filelock.UnixFileLock(lock_path, timeout=0, mode=0o644, fallback_to_soft=False)
    try:
        lock.acquire()
    except filelock.Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        raise OutputLocked(f"another bebert process is writing {output}; refusing to interleave") from None
    except OSError as exc:
        raise _write_error(output, exc) from None
    try:
        _clean_after_killed_publish(output)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        lock.release()


def make_parent(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(output, exc) from None


def check_output(output: Path, overwrite: bool) -> None:
    output = Path(output)
    if output.exists() and not overwrite:
        raise UsageError(f"output {output} already exists; pass --overwrite to replace it")
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a directory")
    # Fail before any expensive work when the output can never be created (e.g. a parent is a file).
    for ancestor in output.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UsageError(f"cannot create output {output}: {ancestor} is not a directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise UsageError(f"cannot create output {output}: {ancestor} is not writable")
            break


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    """File contents and directory entries under `root` reach the disk before it is renamed into place."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            f = os.path.join(dirpath, name)
            if os.path.isfile(f) and not os.path.islink(f):  # regular files only (a FIFO would block)
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(Path(dirpath))


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set-and-restore."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_files_ordinary_modes(root: Path) -> None:
    """Every published file gets the mode a plain open() would have given it (0o666 & ~umask).

    safetensors >= 0.8 writes through a temporary file that is always 0o600 and ignores the umask
    (safetensors issue #782), so a model directory would be readable by its writer only: another
    user, a container running as non-root, or a CI step under another uid could not load it.
    """
    mode = 0o666 & ~_umask()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            f = os.path.join(dirpath, name)
            if os.path.isfile(f) and not os.path.islink(f):
                os.chmod(f, mode)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError, ImportError):
            _renameat2 = False
    if _renameat2 is False:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False  # kernel or file system without RENAME_EXCHANGE: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_output_dir(output: str | os.PathLike, *, overwrite: bool = False):
    """Yield a temporary directory; on success it becomes `output` (replacing it if allowed).

    On any failure (including a full disk while writing) nothing is published, the temporary
    directory is removed and an existing `output` is left exactly as it was.
    """
    output = Path(output)
    check_output(output, overwrite)
    make_parent(output)
    existed = output.exists()
    keep_note = f"; nothing was published and the existing {output} is unchanged" if existed else "; nothing was published"
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise _write_error(output, exc, keep_note) from None
    published = False
    try:
        yield tmp
        _give_files_ordinary_modes(tmp)
        _fsync_tree(tmp)
        if output.exists():
            if _exchange(tmp, output):
                published = True  # `tmp` now holds the previous output
                fsync_dir(output.parent)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = output.parent / f".{output.name}.old-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(output, old)
                try:
                    os.replace(tmp, output)
                except BaseException:
                    os.replace(old, output)  # put the previous output back
                    raise
                published = True
                fsync_dir(output.parent)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
            published = True
            fsync_dir(output.parent)
    except OSError as exc:
        if not published:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, BebertError) or exc.errno not in _DISK_ERRNOS:
            raise
        raise _write_error(output, exc, keep_note) from exc
    except BaseException:
        if not published:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """temp file, fsync, rename: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, BebertError) and exc.errno in _DISK_ERRNOS:
            note = "; the previous version is unchanged" if path.exists() else ""
            raise _write_error(path, exc, note) from exc
        raise
