"""`--format dense`: an ordinary fp32 Hugging Face checkpoint of a binarized model.

model.safetensors holds every parameter of the original architecture under its usual name, fp32:
binary weights and word embeddings as `scale * sign` (the exact values the binary model multiplies
with), everything kept full precision converted exactly from its fp16/fp32 storage. config.json is
the original architecture's config (model_type bert, ...) plus `bebert_quantization` (storage
"dense") and an `auto_map` to the bundled modeling_bebert.py.

* Plain `from_pretrained(DIR)`: the original architecture with binary weights and full-precision
  activations and attention -- an approximation of the binary model, not the binary model.
* `from_pretrained(DIR, trust_remote_code=True)`: the exact binary model; the activation and
  attention quantizers' parameters are in bebert_binary.safetensors (plus, for hashed embeddings,
  the hashed table and its projection).
"""

from __future__ import annotations

from pathlib import Path

from bebert_cli.export.common import (
    MODEL_CLASS,
    copy_side_files,
    copy_template,
    write_json,
)
from bebert_cli.format import is_quantizer_tensor

EXTRA_NAME = "bebert_binary.safetensors"


def dense_state(model, qc: dict) -> tuple[dict, dict]:
    """(plain fp32 state dict, extras only the exact binary model needs)."""
    import torch

    from bebert_cli.quant.packing import unpack_signs

    binary = set(qc.get("binary_modules", [])) | set(qc.get("binary_embeddings", []))
    hashed = list(qc.get("hashed_embeddings", []))
    sd = model.state_dict()
    state, extra = {}, {}
    with torch.no_grad():
        for name, t in sd.items():
            owner, _, leaf = name.rpartition(".")
            if owner in binary and leaf in ("weight_packed", "weight_scale"):
                if leaf == "weight_packed":
                    m = model.get_submodule(owner)
                    k = getattr(m, "in_features", None) or m.embedding_dim
                    scale = sd[f"{owner}.weight_scale"].float().unsqueeze(-1)
                    state[f"{owner}.weight"] = (unpack_signs(t, k) * scale).contiguous()  # -0.0 where scale is 0
                continue
            if is_quantizer_tensor(name) or any(name.startswith(h + ".") for h in hashed):
                extra[name] = t.detach().clone().contiguous()
                continue
            t = t.detach()
            state[name] = (t.float() if t.is_floating_point() else t).clone().contiguous()
        for h in hashed:
            m = model.get_submodule(h)
            table = m.hash_table.detach().float().contiguous()
            extra[f"{h}.hash_table"] = table.clone()
            # The plain model's word-embedding table: the hashed rows (through the projection, if any).
            plain = m(torch.arange(m.num_embeddings)) if getattr(m, "projection", None) is not None else table
            state[f"{h}.weight"] = plain.detach().float().clone().contiguous()
    return state, extra


def write_dense(model, src: Path, out: Path, config: dict, qc: dict) -> dict:
    from safetensors.torch import save_file

    state, extra = dense_state(model, qc)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    save_file(extra, str(out / EXTRA_NAME), metadata={"format": "pt"})
    cfg = dict(config)
    cfg["bebert_quantization"] = {**qc, "storage": "dense"}
    cfg["auto_map"] = {"AutoModelForSequenceClassification": f"modeling_bebert.{MODEL_CLASS}"}
    cfg["dtype"] = "float32"
    cfg.pop("torch_dtype", None)
    write_json(out / "config.json", cfg)
    copy_template(out)
    copy_side_files(src, out)
    return {
        "storage": "dense",
        "exact": "with trust_remote_code=True only",
        "loads_with": (f"AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True) -> the exact "
                       f"binary model; from_pretrained(DIR) without remote code -> the plain {config.get('model_type')} "
                       "architecture with binary weights but full-precision activations (an approximation)"),
    }


def plain_load_agreement(out: Path, batch: dict, binary_logits) -> dict:
    """How far the plain (no remote code) load of a dense export is from the binary model, on `batch`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.models import quiet_transformers

    quiet_transformers()
    plain = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=False).eval()
    with torch.no_grad():
        logits = plain(**batch).logits
    agree = (logits.argmax(-1) == binary_logits.argmax(-1)).float().mean().item() if logits.shape[-1] > 1 else None
    return {"exact": False, "what": "binary weights, full-precision activations",
            "max_abs_logit_diff_on_check_batch": (logits - binary_logits).abs().max().item(),
            "argmax_agreement_on_check_batch": agree}
