"""Running a model over a tokenized split and scoring it with the task's metrics."""

from __future__ import annotations

import numpy as np
import torch

from bebert_cli.metrics import compute_metrics
from bebert_cli.tasks import GlueTask


def batches(ds, collator, batch_size: int, indices=None):
    """Yield padded batches of `ds` in order (dynamic padding per batch)."""
    idx = list(range(len(ds))) if indices is None else list(indices)
    for start in range(0, len(idx), batch_size):
        yield collator([ds[i] for i in idx[start : start + batch_size]])


def model_inputs(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.inference_mode()
def predict_logits(model, ds, collator, *, batch_size: int = 64, device=None, progress=None, description="eval"):
    """Logits for every row of `ds`, in fp32 (bf16 evaluation moves accuracy by points)."""
    device = device or next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    task_id = progress.add_task(description, total=len(ds), info="") if progress is not None else None
    out = []
    try:
        for batch in batches(ds, collator, batch_size):
            logits = model(**model_inputs(batch, device)).logits
            out.append(logits.float().cpu().numpy())
            if progress is not None:
                progress.advance(task_id, len(logits))
    finally:
        model.train(was_training)
        if progress is not None:
            progress.remove_task(task_id)
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def evaluate(model, task: GlueTask, ds, collator, *, batch_size: int = 64, device=None, progress=None, description="eval"):
    """Task metrics of `model` on a tokenized dataset with a `labels` column."""
    labels = np.asarray(ds["labels"])
    if not task.is_regression and (labels < 0).any():  # before predicting a whole split for nothing
        from bebert_cli.errors import DataError

        raise DataError(f"the {task.name} split has no labels (a test split?); evaluate on dev or train")
    logits = predict_logits(model, ds, collator, batch_size=batch_size, device=device, progress=progress, description=description)
    metrics = compute_metrics(task, logits, labels)
    return metrics, logits
