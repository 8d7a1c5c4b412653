"""Hub ids versus local paths, and failing fast without a network.

A name that looks like a path and does not exist is "no such directory", never a hub lookup (a typo in
`./out` must not turn into a minute of network retries). With no network a hub lookup fails in a
fraction of a second with one line naming HF_HUB_OFFLINE=1, instead of transformers' / datasets'
retries. `--revision` and $HF_TOKEN (read by huggingface_hub itself) work for private repositories.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def looks_like_path(name: str) -> bool:
    """`./x`, `/x`, `~/x`, `x/y/z` (a hub id has exactly one slash), or `dir/x` where `dir` exists."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        return True
    parent = Path(name).expanduser().parent
    return "/" in name and parent != Path(".") and parent.is_dir()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_reachable(what: str, name: str, error_type, hint: str = "pass a local directory") -> None:
    """Raise `error_type` at once when the hub cannot be reached (unless offline mode asks for the cache)."""
    if offline():
        return  # the libraries read their local cache and say themselves what is missing
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise error_type(
            f"{what} {name!r} is not a local directory and the hub ({host}) cannot be reached "
            f"({exc.strerror or type(exc).__name__}); {hint}, or set HF_HUB_OFFLINE=1 to use the local hub cache"
        ) from None
