"""ONNX Runtime fp32 and int8 baselines for `bench_model.py` (needs the optional `bench` extra).

What a user who picks ONNX Runtime for CPU inference would run:

1. `torch.onnx.export` of the fp32 model with eager attention, one export with dynamic batch and
   sequence axes. The TorchScript exporter (`dynamo=False`) is used while torch still has it: its
   graph is the one ORT's BERT optimizer recognises (EmbedLayerNormalization, fused Attention,
   BiasGelu, SkipLayerNormalization); from the dynamo exporter's graph (torch 2.13) the optimizer
   fuses no attention, which would make ORT look slower than a user's deployment. The fused-operator
   counts are recorded, so a graph that lost its fusions shows in the JSON.
2. `onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` -> the fp32 row.
3. `onnxruntime.quantization.quantize_dynamic` of the optimized graph (int8 weights, dynamic
   per-tensor activation scales; `DefaultTensorType` FLOAT because the optimizer's fused operators
   leave some tensor types unknown to the quantizer) -> the int8 row.

Sessions: `intra_op_num_threads=<threads>`, inter-op 1, `session.intra_op.allow_spinning = "0"`
so idle ORT worker threads do not spin on the cores the next row (round-robin) needs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def missing() -> str | None:
    """Why the ORT rows cannot run here (None if they can)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
        from onnxruntime.transformers.optimizer import optimize_model  # noqa: F401
    except ImportError as exc:
        return f"{exc} (install the bench extra: pip install -e '.[bench]')"
    return None


def versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


def _logits_module(model):
    """The classifier with positional inputs and the logits tensor as its only output (for export)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    return Logits(model).eval()


def _export(model, path: Path) -> str:
    import torch

    ids = torch.randint(1000, 2000, (2, 16))
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    wrapped = _logits_module(model)
    common = dict(input_names=list(INPUT_NAMES), output_names=["logits"])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(wrapped, example, str(path), dynamo=False, opset_version=17,
                              dynamic_axes={k: {0: "batch", 1: "sequence"} for k in (*INPUT_NAMES, "logits")}, **common)
            return "torchscript"
        except Exception as exc:  # noqa: BLE001 - a torch without the TorchScript exporter: use dynamo's
            first = exc
        try:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(wrapped, example, str(path), dynamo=True, external_data=False,
                              dynamic_shapes={k: {0: batch, 1: seq} for k in INPUT_NAMES}, **common)
            return "dynamo"
        except Exception as exc:
            raise RuntimeError(f"torch.onnx.export failed (TorchScript: {first}; dynamo: {exc})") from exc


def build(fp32_dir: Path, out_dir: Path, num_heads: int, hidden_size: int) -> dict:
    """Export, optimize and quantize the fp32 checkpoint under out_dir (reused when present)."""
    import json

    import torch
    from transformers import AutoModelForSequenceClassification

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": out_dir / "model_opt.onnx", "int8": out_dir / "model_opt_int8.onnx"}
    info_file = out_dir / "build.json"
    if all(p.is_file() for p in paths.values()) and info_file.is_file():
        return {**{k: str(v) for k, v in paths.items()}, **json.loads(info_file.read_text())}
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    model = AutoModelForSequenceClassification.from_pretrained(str(fp32_dir), attn_implementation="eager",
                                                               dtype=torch.float32).eval()
    raw = out_dir / "model.onnx"
    exporter = _export(model, raw)
    del model
    opt = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(paths["fp32"]))
    logging.disable(logging.WARNING)  # the quantizer's "consider pre-processing" advice, once per build
    try:
        quantize_dynamic(str(paths["fp32"]), str(paths["int8"]), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)
    raw.unlink()
    info = {"exporter": exporter, "fused_operators": fused}
    info_file.write_text(json.dumps(info) + "\n")
    return {**{k: str(v) for k, v in paths.items()}, **info}


def session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # no per-session info lines
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feeds(batch: dict) -> dict:
    """The numpy inputs of one torch batch (converted once, outside the timed calls)."""
    return {k: batch[k].numpy() for k in INPUT_NAMES}


def runner(sess, batch: dict):
    """A zero-argument callable that runs one forward (what the timing loop calls)."""
    f = feeds(batch)
    return lambda: sess.run(["logits"], f)
