"""Small packed forwards on one thread or on the kernels' pool where that is faster, under a passive OpenMP wait policy (quant/serial.py)."""

import contextlib
import threading

import pytest
import torch

from bebert_cli import kernels
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


def test_measured_rule_tries_every_setting_then_keeps_the_fastest(tmp_path, monkeypatch, two_threads):
    """Passive policy, no override: per size class a warm-up forward on every thread, then trials
    cycling through the settings, then the fastest for good; logits equal throughout."""
    monkeypatch.delenv("BEBERT_SERIAL_MAX_TOKENS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    model = load_packed(packed_checkpoint(tmp_path / "ckpt", "w1a4"), runtime="packed")
    settings = model._bebert_thread_choice.settings
    assert settings == ((serial.ONE_THREAD, serial.POOL, serial.EVERY_THREAD) if kernels.pool_available()
                        else (serial.ONE_THREAD, serial.EVERY_THREAD))
    seen = []  # (torch's thread count, the kernels' default count) inside each forward
    model.bert.encoder.register_forward_hook(lambda *a: seen.append((torch.get_num_threads(), kernels._threads(None))))
    b = batch(rows=4, length=10)  # 40 tokens: size class 64
    trials = len(settings) * serial.TRIALS
    with torch.no_grad():
        outs = [model(**b).logits for _ in range(1 + trials + 3)]
    assert all(torch.equal(o, outs[0]) for o in outs)
    threads = {serial.EVERY_THREAD: (2, 2), serial.ONE_THREAD: (1, 1), serial.POOL: (1, 2)}
    assert seen[: 1 + trials] == [(2, 2)] + [threads[s] for s in settings] * serial.TRIALS
    choice, key = model._bebert_thread_choice, (kernels.backend(), 6)
    assert list(choice.chosen) == [key] and choice.summary() == {f"{kernels.backend()}: 64": choice.chosen[key]}
    assert seen[1 + trials:] == [threads[choice.chosen[key]]] * 3
    assert torch.get_num_threads() == 2 and kernels._threads(None) == 2  # every session closed
    # a forward past MEASURED_MAX_TOKENS is never switched, nor measured
    big = batch(rows=serial.MEASURED_MAX_TOKENS // 64 + 1, length=64)
    with torch.no_grad():
        model(**big)
    assert seen[-1] == (2, 2) and list(choice.seen) == [key]


def test_the_choice_is_the_fastest_median_per_backend_and_size(monkeypatch):
    monkeypatch.setattr(serial, "TRIALS", 2)
    choice = serial.ThreadChoice((serial.ONE_THREAD, serial.POOL, serial.EVERY_THREAD))
    key = ("avx2", 3)
    assert choice.plan(key) == (serial.EVERY_THREAD, False)  # warm-up
    for one, pool, every in ((0.010, 0.004, 0.020), (0.011, 0.030, 0.012)):
        for setting, seconds in ((serial.ONE_THREAD, one), (serial.POOL, pool), (serial.EVERY_THREAD, every)):
            assert choice.plan(key) == (setting, True)
            choice.record(key, setting, seconds)
    assert choice.chosen == {key: serial.ONE_THREAD}  # medians 10.5, 17 and 16 ms
    assert choice.plan(key) == (serial.ONE_THREAD, False)
    # another backend (or size) measures on its own
    assert choice.plan(("avx512_vpopcntdq", 3)) == (serial.EVERY_THREAD, False)
    assert choice.summary() == {"avx2: 8": serial.ONE_THREAD}


@pytest.mark.skipif(not kernels.pool_available(), reason="the kernels' pool is not built here")
def test_pool_sessions_nest_and_restore_the_kernels_thread_count(two_threads):
    assert kernels._threads(None) == 2
    with kernels.pool_session(3):
        assert kernels._threads(None) == 3
        with kernels.pool_session(2):
            assert kernels._threads(None) == 3  # the largest of those open
        assert kernels._threads(None) == 3
    assert kernels._threads(None) == 2 and kernels._pool == {"depth": 0, "threads": 0}
    with pytest.raises(RuntimeError, match="inside"), kernels.pool_session(2):
        raise RuntimeError("inside")
    assert kernels._pool == {"depth": 0, "threads": 0}
    with kernels.pool_session(1):  # one thread: nothing to share
        assert kernels._pool["depth"] == 0


def test_thread_count_does_not_change_the_bits(tmp_path):
    """What makes measuring safe: a packed model's logits and hidden states are the same bits on one
    thread and on two (integer kernels; torch's float ops are row-wise)."""
    for recipe in ("bibert", "w1a4", "w1a8"):
        model = load_packed(packed_checkpoint(tmp_path / recipe, recipe), runtime="packed")
        before, outs = torch.get_num_threads(), []
        try:
            for threads, pool in ((1, False), (2, False), (2, True)):
                torch.set_num_threads(threads)
                with torch.no_grad(), contextlib.ExitStack() as stack:
                    if pool:  # torch on one thread, the kernels on two of the pool's
                        torch.set_num_threads(1)
                        stack.enter_context(kernels.pool_session(2))
                    outs.append(model(**batch(rows=6, length=40), output_hidden_states=True))
        finally:
            torch.set_num_threads(before)
        for other in outs[1:]:
            assert torch.equal(outs[0].logits, other.logits), recipe
            assert all(torch.equal(a, b) for a, b in zip(outs[0].hidden_states, other.hidden_states, strict=True)), recipe
