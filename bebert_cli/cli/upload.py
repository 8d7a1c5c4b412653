"""`bebert upload DIR REPO_ID`: push a finished checkpoint, with its model card, to the Hugging Face Hub.

Only a directory bebert can load is pushed (a full-precision, packed, ensemble or exported
checkpoint, weights in safetensors); a missing card is written first (`bebert report --write-card`),
so the Hub page says what the model is. Hidden files (locks, editor and OS droppings) stay local.
The token is HF_TOKEN, else the one `hf auth login` stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bebert_cli.cli import options as opt

IGNORE = [".*", "**/.*", "__pycache__/*", "**/__pycache__/*"]


def checkpoint_files(path: Path) -> list[str]:
    """The files `upload_folder` will send (the same filter huggingface_hub applies)."""
    from huggingface_hub.utils import filter_repo_objects

    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return list(filter_repo_objects(files, ignore_patterns=IGNORE))


def check_checkpoint(path: Path) -> str:
    """The checkpoint's kind; refuses anything bebert (or transformers) could not load from the repository."""
    from bebert_cli.checkpoint import checkpoint_kind
    from bebert_cli.errors import ModelError

    kind = checkpoint_kind(path)  # a directory with a readable config.json, or an ensemble manifest
    if kind == "ensemble":
        from bebert_cli.ensemble.model import read_manifest

        dirs = read_manifest(path)["_member_dirs"]
        missing = [str(d) for d in dirs if not (Path(d) / "model.safetensors").is_file()]
        if missing:
            raise ModelError(f"{path}: ensemble member(s) without model.safetensors: {', '.join(missing)}")
    elif not ((path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()):
        raise ModelError(f"{path} has no model.safetensors; bebert uploads checkpoints whose weights are safetensors")
    return kind


def upload_command(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="Checkpoint directory to push (bebert finetune / binarize / ensemble / export output).")],
    repo_id: Annotated[str, typer.Argument(metavar="REPO_ID", help="Hub repository, e.g. your-name/bebert-sst2-w1a4 (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private (an existing one keeps its visibility).")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to push to (created from main if missing); default main.")] = None,
    commit_message: Annotated[Optional[str], typer.Option("--commit-message", help="Commit message; default names the checkpoint.")] = None,
    json_out: opt.JsonOut = False,
    quiet: opt.Quiet = False,
):
    """Upload a checkpoint and its model card to the Hugging Face Hub (token: HF_TOKEN)."""
    from bebert_cli.cli.output import Output
    from bebert_cli.errors import BebertError, UsageError

    out = Output(json_mode=json_out, quiet=quiet)
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"invalid repository id {repo_id!r}: {str(exc).splitlines()[0]}") from None
    path = Path(path).expanduser()
    kind = check_checkpoint(path)
    token = get_token()  # HF_TOKEN first, then the token `hf auth login` saved
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN (a write token) or run `hf auth login`")
    if not (path / "README.md").is_file():
        from bebert_cli.report.card import write_model_card

        write_model_card(path)
        out.log(f"Wrote the model card {path / 'README.md'}")
    files = checkpoint_files(path)

    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(path), repo_type="model", revision=revision,
            commit_message=commit_message or f"Upload {path.name} ({kind} checkpoint) with bebert",
            ignore_patterns=list(IGNORE),
        )
    except BebertError:
        raise
    except Exception as exc:  # HTTP, network and permission errors of the Hub: one clear line
        raise BebertError(f"upload to {repo_id} failed: {' '.join(str(exc).split())[:300]}") from exc

    url = getattr(repo_url, "url", None) or str(repo_url)
    out.log(f"Uploaded {len(files)} files from {path} to {url}" + (f" (branch {revision})" if revision else ""))
    out.result({"repo_id": repo_id, "url": url, "revision": revision or "main", "private": private, "kind": kind,
                "files": files, "commit_url": getattr(commit, "commit_url", None), "commit": getattr(commit, "oid", None)}, "upload")


def register(app: typer.Typer) -> None:
    app.command("upload", epilog=opt.examples(
        "HF_TOKEN=hf_... bebert upload student/ you/bebert-sst2-w1a4",
        "bebert upload student/ you/bebert-sst2-w1a4 --private --revision experiment-1",
    ))(upload_command)
