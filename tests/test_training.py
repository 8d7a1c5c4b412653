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
        train(model, train_ds=data, collator=_collate, cfg=TrainConfig(epochs=1, batch_size=4, group_by_length=False), loss_fn=loss_fn,
              accelerator=make_accelerator(cpu=True), work_dir=tmp_path / "w", resume=False)


def test_data_order_depends_only_on_seed_and_epoch():
    a = _epoch_batches(50, 8, seed=1, epoch=3)
    assert a == _epoch_batches(50, 8, seed=1, epoch=3)
    assert a != _epoch_batches(50, 8, seed=1, epoch=4)
    assert sorted(i for b in a for i in b) == list(range(50)) and len(a) == math.ceil(50 / 8)


def test_a_process_with_an_empty_slice_runs_a_stand_in_row_at_weight_zero():
    ranks = [LengthGroupedBatchSampler(33, 8, seed=0, group_by_length=False, rank=r, world=2) for r in (0, 1)]
    batches = ranks[0].global_batches(0)
    assert [len(b) for b in batches] == [8, 8, 8, 8, 1]  # the same batches as on one process
    last = [list(r)[-1] for r in ranks]
    assert last == [batches[-1], batches[-1]]
    assert [r.slice_size(1) for r in ranks] == [1, 0] and [r.slice_size(8) for r in ranks] == [4, 4]


# --- length-grouped batching -------------------------------------------------------------------

from bebert_cli.training import LengthGroupedBatchSampler, padded_positions, row_lengths  # noqa: E402


def _lengths(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 60, (n,), generator=g).tolist()


def _sampler(n=1000, bs=8, **kw):
    return LengthGroupedBatchSampler(n, bs, seed=kw.pop("seed", 5), lengths=_lengths(n), **kw)


def test_grouped_batches_cover_every_row_once_in_a_seeded_order():
    s = _sampler()
    a = s.global_batches(2)
    assert sorted(i for b in a for i in b) == list(range(1000))
    assert a == _sampler().global_batches(2) and a != s.global_batches(3) and a != _sampler(seed=6).global_batches(2)
    assert [len(b) for b in a].count(8) == 125


def test_grouping_cuts_padding_and_keeps_the_batch_order_random():
    lengths = _lengths(1000)
    grouped, plain = _sampler(mega_batches=10), _sampler(group_by_length=False)
    g, p = grouped.global_batches(0), plain.global_batches(0)
    assert padded_positions(g, lengths) < 0.75 * padded_positions(p, lengths)
    def median_spread(batches):
        spread = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
        return spread[len(spread) // 2]

    assert median_spread(g) * 5 < median_spread(p)  # rows of a batch have near-equal lengths
    firsts = [max(lengths[i] for i in b) for b in g[:20]]
    assert firsts != sorted(firsts, reverse=True)  # batches are shuffled, not longest first


def test_ungrouped_order_is_the_plain_seeded_permutation():
    plain = LengthGroupedBatchSampler(50, 8, seed=1, group_by_length=False).global_batches(3)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1 * 1_000_003 + 3)).tolist()
    assert plain == [perm[i:i + 8] for i in range(0, 50, 8)]


def test_resume_position_and_process_slices():
    s = _sampler(n=100, bs=7, rank=1, world=2)
    full = s.global_batches(1)
    s.set_epoch(1, start=4)
    mine = list(s)
    assert len(s) == len(full) - 4 and mine == [b[1::2] for b in full[4:]]
    r0 = _sampler(n=100, bs=7, rank=0, world=2)
    r0.set_epoch(1, start=4)
    assert [sorted(a + b) for a, b in zip(list(r0), mine)] == [sorted(b) for b in full[4:]]


def test_grouping_needs_lengths():
    with pytest.raises(TrainingError, match="input_ids"):
        row_lengths([{"x": torch.zeros(2)}])
    assert row_lengths([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]) == [3, 1]


def test_scale_parameters_get_their_own_learning_rate(tmp_path):
    from bebert_cli.training import _optimizer

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = _optimizer(model, TrainConfig(lr=1e-3, scale_lr=1e-4), scale_params={"1.bias"})
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model[1].bias)] == 1e-4 and lrs[id(model[0].weight)] == 1e-3
    assert len(_optimizer(model, TrainConfig(lr=1e-3), scale_params={"1.bias"}).param_groups) == 2


_DIST_SCRIPT = r'''
import json, sys
from pathlib import Path
import torch
from bebert_cli.pipeline import make_accelerator
from bebert_cli.training import TrainConfig, train

out, epochs, group, n = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
torch.manual_seed(0)
rows = [{"input_ids": list(range(3 + (7 * i) % 11)), "x": torch.randn(3), "y": torch.randn(1)} for i in range(n)]
model = torch.nn.Linear(3, 1)
collate = lambda rs: {"x": torch.stack([r["x"] for r in rs]), "y": torch.stack([r["y"] for r in rs])}
loss_fn = lambda m, b: (torch.nn.functional.mse_loss(m(b["x"]), b["y"]), {})
acc = make_accelerator(cpu=True)
cfg = TrainConfig(epochs=epochs, lr=0.1, batch_size=5, warmup_ratio=0.0, log_every=1, group_by_length=group)
res = train(model, train_ds=rows, collator=collate, cfg=cfg, loss_fn=loss_fn, accelerator=acc,
            work_dir=out / f"work{acc.process_index}", resume=False)
if acc.is_main_process:
    (out / "result.json").write_text(json.dumps({"loss": res.last_loss, "steps": res.steps, "world": acc.num_processes,
        "w": [float(v) for v in model.weight.view(-1)] + [float(model.bias)]}))
'''


@pytest.mark.parametrize("epochs,group,rows,steps", [(0.25, "1", 20, 1), (1.0, "0", 20, 4), (1.0, "1", 21, 5)])
def test_one_and_two_processes_train_the_same_model(tmp_path, epochs, group, rows, steps):
    """Global batch 5 over 2 processes: slices of 3 and 2 rows, weighted so the update is the global mean's;
    with 21 rows the last batch has one row, and the second process a stand-in at weight zero."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(_DIST_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        out.mkdir()
        if procs == 1:
            cmd = [sys.executable, str(script)]
        else:
            cmd = [shutil.which("torchrun", path=os.path.dirname(sys.executable)), "--standalone", "--nproc_per_node",
                   "2", str(script)]
        proc = subprocess.run([*cmd, str(out), str(epochs), group, str(rows)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads((out / "result.json").read_text()))
    one, two = results
    assert two["world"] == 2 and one["steps"] == two["steps"] == steps
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-5)
    assert one["w"] == pytest.approx(two["w"], rel=1e-5, abs=1e-6)


def test_schedule_is_transformers_linear_warmup_one_step_ahead_during_warmup():
    """Why the schedule stays hand-written: transformers' starts warm-up at lr 0, one step behind ours."""
    from transformers import get_linear_schedule_with_warmup

    from bebert_cli.training import _schedule

    def factors(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(opt)
        out = []
        for _ in range(20):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    ours = factors(lambda o: _schedule(o, 20, 0.25))
    theirs = factors(lambda o: get_linear_schedule_with_warmup(o, 5, 20))
    assert ours[:5] == pytest.approx(theirs[1:6]) and ours[0] == pytest.approx(0.2) and theirs[0] == 0.0
    assert ours[5:] == pytest.approx(theirs[5:])
