"""The life of a training command's output: refuse clobbering, lock, keep resumable state
beside the output, publish the finished directory atomically, then drop the state."""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
from pathlib import Path

from bebert_cli import __version__
from bebert_cli.atomic import atomic_output_dir, check_output, output_lock, work_dir_for
from bebert_cli.errors import UsageError


@contextlib.contextmanager
def training_run(output: Path, *, overwrite: bool, resume: bool, accelerator):
    """Yield the work directory for resumable state; only the main process locks and checks."""
    output = Path(output)
    work = work_dir_for(output)
    main = accelerator.is_main_process
    lock = output_lock(output) if main else contextlib.nullcontext()
    with lock:
        if main:
            check_output(output, overwrite)
            if work.exists() and not resume:
                if not overwrite:
                    raise UsageError(
                        f"an interrupted run left its state in {work}; pass --resume to continue it "
                        "or --overwrite to start over"
                    )
                shutil.rmtree(work)
        accelerator.wait_for_everyone()
        try:
            yield work
        finally:
            if main:
                with contextlib.suppress(OSError):
                    work.rmdir()  # only if empty: saved state is never removed here


def publish(output: Path, write, *, overwrite: bool, accelerator) -> None:
    """Main process writes the final directory via `write(tmp_dir)`; the state is then dropped."""
    if accelerator.is_main_process:
        with atomic_output_dir(output, overwrite=overwrite) as tmp:
            write(tmp)
        shutil.rmtree(work_dir_for(Path(output)), ignore_errors=True)
    accelerator.wait_for_everyone()


def environment_info() -> dict:
    """Versions and the machine facts a seed cannot control (see `bebert_cli.reproducibility`)."""
    import torch
    import transformers

    from bebert_cli.reproducibility import uncontrolled

    return {
        "bebert": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **uncontrolled(),
    }
