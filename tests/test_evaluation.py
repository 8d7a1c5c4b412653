"""evaluate(): labels are checked before any prediction is made."""

import pytest
import torch
from datasets import Dataset

from bebert_cli.errors import DataError
from bebert_cli.evaluation import evaluate
from bebert_cli.tasks import get_task


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        self.calls += 1
        return type("Out", (), {"logits": torch.zeros(len(input_ids), 2)})()


def _collate(rows):
    return {"input_ids": torch.tensor([r["input_ids"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}


def test_missing_labels_refused_before_predicting():
    ds = Dataset.from_dict({"input_ids": [[1, 2]] * 6, "labels": [-1] * 6})
    model = _Counting()
    with pytest.raises(DataError, match="has no labels"):
        evaluate(model, get_task("sst2"), ds, _collate, batch_size=2)
    assert model.calls == 0


def test_labelled_split_is_scored():
    ds = Dataset.from_dict({"input_ids": [[1, 2]] * 4, "labels": [0, 0, 1, 0]})
    model = _Counting()
    metrics, logits = evaluate(model, get_task("sst2"), ds, _collate, batch_size=2)
    assert metrics["accuracy"] == pytest.approx(0.75) and model.calls == 2 and logits.shape == (4, 2)
