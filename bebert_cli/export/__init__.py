"""`bebert export`: write a packed binary checkpoint in a form other tools can load.

Formats (what each directory is, exactly):

packed       bebert's own format, copied after a full validation (header, shapes, dtypes, metadata):
             config.json with `quantization_config`, model.safetensors with uint8 signs + fp16
             scales, recipe, tokenizer. Loads with `bebert_cli.load_model` / `bebert eval`.
dense        an ordinary fp32 Hugging Face checkpoint of the binarized model: every binary weight
             written as `scale * sign` under the original parameter names (no size benefit).
             Plain `AutoModelForSequenceClassification.from_pretrained(DIR)` (no bebert, no remote
             code) loads it as the original architecture: binary weights but FULL-PRECISION
             activations and softmax attention, i.e. NOT the binary model (its predictions differ).
             `from_pretrained(DIR, trust_remote_code=True)` loads the exact binary model (activation
             quantizers from bebert_binary.safetensors, modeling_bebert.py bundled): the same logits
             as bebert's simulated runtime.
remote-code  still packed on disk (the same model.safetensors) plus standalone modeling code
             (modeling_bebert.py, configuration_bebert.py: torch + transformers + safetensors only);
             config.json has model_type "bebert" and an auto_map, so
             `from_pretrained(DIR, trust_remote_code=True)` runs it without bebert installed, with
             the logits of bebert's simulated runtime.

Every export is written atomically and, unless `verify=False`, reloaded and checked before it is
published: its logits on a fixed batch must equal the source model's exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bebert_cli.errors import CheckpointError, UsageError
from bebert_cli.files import checkpoint_bytes
from bebert_cli.export.common import (  # noqa: F401 - re-exported: the exporters' shared names
    CONFIG_CLASS,
    FORMATS,
    MODEL_CLASS,
    TEMPLATE_DIR,
    TEMPLATE_FILES,
    _logits,
    copy_side_files,
    copy_template,
    LINEAR_FORM,
    load_remote_code_class,
    source_config,
    verification_batch,
    write_json,
)


def verify_export(model, out: Path, fmt: str) -> dict:
    """Reload the export as a user would and compare logits with the source model exactly."""
    import torch

    batch = verification_batch(model)
    expected = _logits(model, batch)
    if fmt == "packed":
        from bebert_cli.quant.packed import load_packed

        loaded = load_packed(out)
    else:
        for name in TEMPLATE_FILES:
            if (out / name).read_bytes() != (TEMPLATE_DIR / name).read_bytes():
                raise CheckpointError(f"export verification failed: {name} differs from bebert's template")
        loaded = load_remote_code_class().from_pretrained(str(out))
    got = _logits(loaded, batch)
    if not torch.equal(expected, got):
        diff = (expected - got).abs().max().item()
        raise CheckpointError(f"export verification failed: {fmt} logits differ from the source by {diff:.3g}")
    result = {"verified": True, "checked_rows": int(expected.shape[0]), "max_abs_diff": 0.0}
    if fmt == "dense":
        from bebert_cli.export.dense import plain_load_agreement

        result["plain_load"] = plain_load_agreement(out, batch, expected)
    return result


def export_checkpoint(src, output, fmt: str, *, overwrite: bool = False, verify: bool = True, log=None) -> dict:
    """Export the packed checkpoint `src` to `output` in format `fmt`; returns the JSON payload."""
    from bebert_cli.atomic import atomic_output_dir, check_output
    from bebert_cli.format import checkpoint_kind
    from bebert_cli.quant.packed import load_packed

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    src, output = Path(src), Path(output)
    kind = checkpoint_kind(src)
    if kind != "packed":
        what = "an ensemble" if kind == "ensemble" else "a full-precision checkpoint"
        raise UsageError(f"{src} is {what}; bebert export needs a packed binary checkpoint (the output of bebert binarize)")
    if output.resolve() == src.resolve():
        raise UsageError("the output directory is the source checkpoint; choose another -o")
    check_output(output, overwrite)
    model = load_packed(src)  # validates header, shapes, dtypes and metadata before anything is written
    config, qc = source_config(src)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        if fmt == "packed":
            shutil.copy2(src / "config.json", tmp / "config.json")
            shutil.copy2(src / "model.safetensors", tmp / "model.safetensors")
            copy_side_files(src, tmp)
            info = {"storage": "packed", "loads_with": "bebert_cli.load_model(DIR) / bebert eval DIR",
                    "exact": True}
        elif fmt == "dense":
            from bebert_cli.export.dense import write_dense

            info = write_dense(model, src, tmp, config, qc)
        else:
            from bebert_cli.export.remote_code import write_remote_code

            info = write_remote_code(model, src, tmp, config, qc)
        from bebert_cli.report.card import write_model_card

        # The export's own card (how it loads differs from the source's); a packed copy is renamed only.
        write_model_card(src, name=output.name, out_dir=tmp, export_format=None if fmt == "packed" else fmt)
        if verify:
            if log:
                log("verifying the export (reload + exact logits check) ...")
            info["verification"] = verify_export(model, tmp, fmt)
        files = sorted(f.name for f in tmp.iterdir() if f.is_file())
        size = checkpoint_bytes(tmp)
    recipe = qc.get("recipe", {})
    return {
        "format": fmt,
        "source": str(src),
        "output": str(output),
        "files": files,
        "bytes": size,
        "source_bytes": checkpoint_bytes(src),
        "recipe": recipe.get("name"),
        "bits": qc.get("bits_label"),
        "model_type": config.get("model_type"),
        "verified": bool(verify),
        **info,
    }
