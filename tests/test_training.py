import math

import pytest
import torch

from bebert_cli.errors import TrainingError
from bebert_cli.pipeline import make_accelerator
from bebert_cli.training import TrainConfig, _epoch_batches, train


class _Data(list):
    pass


def _collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model = torch.nn.Linear(2, 1)
    data = _Data({"x": torch.randn(2), "y": torch.randn(1)} for _ in range(16))

    def loss_fn(m, batch):
        return m(batch["x"]).sum() * float("nan"), {}

    with pytest.raises(TrainingError, match="loss became nan"):
        train(model, train_ds=data, collator=_collate, cfg=TrainConfig(epochs=1, batch_size=4), loss_fn=loss_fn,
              accelerator=make_accelerator(cpu=True), work_dir=tmp_path / "w", resume=False)


def test_data_order_depends_only_on_seed_and_epoch():
    a = _epoch_batches(50, 8, seed=1, epoch=3)
    assert a == _epoch_batches(50, 8, seed=1, epoch=3)
    assert a != _epoch_batches(50, 8, seed=1, epoch=4)
    assert sorted(i for b in a for i in b) == list(range(50)) and len(a) == math.ceil(50 / 8)


def test_last_batch_never_leaves_a_process_empty():
    batches = _epoch_batches(33, 8, seed=0, epoch=0, min_size=2)  # 8,8,8,8,1 -> the 1 is folded in
    assert [len(b) for b in batches] == [8, 8, 8, 9]
    assert sorted(i for b in batches for i in b) == list(range(33))
