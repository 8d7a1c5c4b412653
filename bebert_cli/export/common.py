"""What the exporters (`dense.py`, `remote_code.py`) and `export_checkpoint` share: the template, the
side files, the source's config and the fixed verification batch."""

from __future__ import annotations

import shutil
from pathlib import Path

from bebert_cli.families import family
from bebert_cli.files import write_json  # noqa: F401 - the exporters write their side files with it

FORMATS = ("packed", "dense", "remote-code")
TEMPLATE_DIR = Path(__file__).with_name("remote_template")
TEMPLATE_FILES = ("modeling_bebert.py", "configuration_bebert.py")
MODEL_CLASS = "BebertForSequenceClassification"
CONFIG_CLASS = "BebertConfig"
# Files of a packed checkpoint that an export rewrites rather than copies.
_REWRITTEN = {"config.json", "model.safetensors"}


def copy_side_files(src: Path, out: Path, *, skip=frozenset()) -> list[str]:
    """Copy tokenizer files, recipe, eval results and run info (every top-level regular file not rewritten)."""
    copied = []
    for f in sorted(Path(src).iterdir()):
        if f.is_file() and not f.is_symlink() and not f.name.startswith(".") and f.name not in _REWRITTEN | set(skip):
            shutil.copy2(f, out / f.name)
            copied.append(f.name)
    return copied


def copy_template(out: Path) -> None:
    for name in TEMPLATE_FILES:
        shutil.copy2(TEMPLATE_DIR / name, out / name)


# How bebert's binary Linear orders its float ops, which the standalone code must follow:
# linear(integers, signs) * (w_scale * a_scale), an exact integer dot first (docs/performance.md).
LINEAR_FORM = "split"


def source_config(src: Path) -> tuple[dict, dict]:
    """(config without quantization_config, quantization_config + the linear form) of a packed checkpoint."""
    from bebert_cli.format import read_config_json

    config = read_config_json(src)
    qc = config.pop("quantization_config")
    qc["linear_form"] = LINEAR_FORM
    return config, qc


def verification_batch(model, *, seed: int = 0):
    """A fixed batch of token ids (with padding) that every export must reproduce exactly."""
    import torch

    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(5, vocab - 1), vocab, (3, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 5:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if family(model.config).token_type_ids:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


def _logits(model, batch):
    import torch

    with torch.no_grad():
        return model(**batch).logits


def load_remote_code_class():
    """The bundled modeling class (the copy shipped in bebert; exports carry byte-identical copies)."""
    from bebert_cli.export.remote_template import modeling_bebert

    return modeling_bebert.BebertForSequenceClassification
