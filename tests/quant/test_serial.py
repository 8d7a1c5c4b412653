"""Small packed forwards on one thread where that is faster, under a passive OpenMP wait policy (quant/serial.py)."""

import threading

import pytest
import torch

from bebert_cli.errors import UsageError
from bebert_cli.quant import serial
from bebert_cli.quant.packed import load_packed
from tests.quant.test_runtime import batch, packed_checkpoint


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_limit_follows_the_wait_policy_and_the_override(monkeypatch):
    monkeypatch.delenv("BEBERT_SERIAL_MAX_TOKENS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert serial.serial_max_tokens() == 0  # spinning threads: two threads win at every size
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert serial.serial_max_tokens() == serial.MEASURED
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "0")
    assert serial.serial_max_tokens() == 0
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "64")
    assert serial.serial_max_tokens() == 64
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "many")
    with pytest.raises(UsageError, match="BEBERT_SERIAL_MAX_TOKENS"):
        serial.serial_max_tokens()


def test_small_forwards_run_on_one_thread_and_restore_it(tmp_path, monkeypatch, two_threads):
    model = load_packed(packed_checkpoint(tmp_path / "ckpt", "w1a4"), runtime="packed")
    seen = []
    model.bert.encoder.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    small, large = batch(rows=4, length=5), batch(rows=6, length=20)  # 20 and 120 tokens
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "100")
    with torch.no_grad():
        want_small, want_large = model(**small).logits, model(**large).logits
        assert seen == [1, 2] and torch.get_num_threads() == 2
        monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "0")
        assert torch.equal(model(**small).logits, want_small) and torch.equal(model(**large).logits, want_large)
    assert seen == [1, 2, 2, 2]
    # with autograd on (training) the thread count is never touched
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "100")
    model(**small)
    assert seen[-1] == 2


def test_thread_count_comes_back_when_the_forward_raises(tmp_path, monkeypatch, two_threads):
    model = load_packed(packed_checkpoint(tmp_path / "ckpt", "bibert"), runtime="packed")
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "1000")

    def boom(*a):
        raise RuntimeError("boom")

    handle = model.bert.encoder.register_forward_hook(boom)
    with torch.no_grad(), pytest.raises(RuntimeError, match="boom"):
        model(**batch())
    assert torch.get_num_threads() == 2
    handle.remove()
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "lots")
    with torch.no_grad(), pytest.raises(UsageError):
        model(**batch())
    assert torch.get_num_threads() == 2 and not serial._calls.stack


def test_concurrent_small_forwards_give_the_count_back(tmp_path, monkeypatch, two_threads):
    """Two Python threads in small forwards at once: both run on one thread, their logits are the
    model's, and once both have ended the thread count is the one they started with. (torch's count is
    shared by the process's threads, so while one forward runs another may see its switch.)"""
    model = load_packed(packed_checkpoint(tmp_path / "ckpt", "w1a8"), runtime="packed")
    monkeypatch.setenv("BEBERT_SERIAL_MAX_TOKENS", "1000")
    with torch.no_grad():
        want = model(**batch()).logits
    inside = threading.Barrier(2)
    during = []

    def hold(*a):  # both forwards are inside before either leaves
        during.append(torch.get_num_threads())
        inside.wait(timeout=30)

    model.bert.encoder.register_forward_hook(hold)
    results = []

    def work():
        with torch.no_grad():
            results.append(model(**batch()).logits)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert during == [1, 1] and torch.get_num_threads() == 2
    assert len(results) == 2 and all(torch.equal(r, want) for r in results)


def test_measured_rule_tries_both_then_keeps_the_faster(tmp_path, monkeypatch, two_threads):
    """Passive policy, no override: per size class a warm-up forward on every thread, then trials
    alternating one thread / every thread, then the faster one for good; logits equal throughout."""
    monkeypatch.delenv("BEBERT_SERIAL_MAX_TOKENS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    model = load_packed(packed_checkpoint(tmp_path / "ckpt", "w1a4"), runtime="packed")
    seen = []
    model.bert.encoder.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    b = batch(rows=4, length=10)  # 40 tokens: size class 64
    with torch.no_grad():
        outs = [model(**b).logits for _ in range(1 + 2 * serial.TRIALS + 3)]
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert seen[: 1 + 2 * serial.TRIALS] == [2] + [1, 2] * serial.TRIALS
    choice = model._bebert_thread_choice
    assert list(choice.serial) == [6] and choice.summary() == {"64": "one thread" if choice.serial[6] else "every thread"}
    assert seen[1 + 2 * serial.TRIALS:] == [1 if choice.serial[6] else 2] * 3 and torch.get_num_threads() == 2
    # a forward past MEASURED_MAX_TOKENS is never switched, nor measured
    big = batch(rows=serial.MEASURED_MAX_TOKENS // 64 + 1, length=64)
    with torch.no_grad():
        model(**big)
    assert seen[-1] == 2 and list(choice.seen) == [6]


def test_the_choice_is_the_faster_median():
    choice = serial.ThreadChoice()
    assert choice.plan(3) == (False, False)  # warm-up
    for seconds_serial, seconds_parallel in ((0.010, 0.004), (0.011, 0.030)):
        assert choice.plan(3) == (True, True)
        choice.record(3, True, seconds_serial)
        assert choice.plan(3) == (False, True)
        choice.record(3, False, seconds_parallel)
    assert choice.serial == {3: True}  # medians 10.5 ms on one thread, 17 ms on two
    assert choice.plan(3) == (True, False)


def test_thread_count_does_not_change_the_bits(tmp_path):
    """What makes measuring safe: a packed model's logits and hidden states are the same bits on one
    thread and on two (integer kernels; torch's float ops are row-wise)."""
    for recipe in ("bibert", "w1a4", "w1a8"):
        model = load_packed(packed_checkpoint(tmp_path / recipe, recipe), runtime="packed")
        before, outs = torch.get_num_threads(), []
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                with torch.no_grad():
                    outs.append(model(**batch(rows=6, length=40), output_hidden_states=True))
        finally:
            torch.set_num_threads(before)
        assert torch.equal(outs[0].logits, outs[1].logits), recipe
        assert all(torch.equal(a, b) for a, b in zip(outs[0].hidden_states, outs[1].hidden_states, strict=True)), recipe
