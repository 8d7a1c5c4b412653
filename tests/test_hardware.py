"""--mixed-precision auto: bf16 only where the CPU computes it natively."""

import pytest

from bebert_cli import hardware

ZEN2 = {"model name": "AMD EPYC 7B12", "flags": "fpu sse2 avx avx2 fma popcnt bmi2"}
ZEN4 = {"model name": "AMD EPYC 9B14", "flags": "avx2 fma popcnt avx512f avx512bw avx512_vpopcntdq avx512_bf16"}


@pytest.fixture
def cpu(monkeypatch):
    def use(info, machine="x86_64"):
        monkeypatch.setattr(hardware, "_cpuinfo", lambda: info)
        monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
        monkeypatch.setattr(hardware, "_WARNED", set())
    return use


def test_auto_is_fp32_without_native_bf16(cpu):
    cpu(ZEN2)
    resolved, reason = hardware.resolve_mixed_precision("auto", "cpu")
    assert resolved == "no" and "AVX512_BF16" in reason and "emulate" in reason
    assert hardware.shown_cpu_features() == ["avx2", "fma", "popcnt"]


def test_auto_is_bf16_with_native_bf16(cpu):
    cpu(ZEN4)
    assert hardware.resolve_mixed_precision("auto", "cpu") == ("bf16", "bf16 autocast (auto: this CPU has AVX512_BF16)")
    cpu({"Features": "fp asimd bf16 i8mm"}, machine="aarch64")
    assert hardware.resolve_mixed_precision("auto", "cpu")[0] == "bf16"
    cpu({"Features": "fp asimd"}, machine="aarch64")
    assert hardware.resolve_mixed_precision("auto", "cpu")[0] == "no"


def test_explicit_bf16_on_an_emulating_cpu_warns_once(cpu):
    cpu(ZEN2)
    said = []
    for _ in range(3):
        assert hardware.resolve_mixed_precision("bf16", "cpu", warn=said.append)[0] == "bf16"
    assert len(said) == 1 and "much slower" in said[0]
    assert hardware.resolve_mixed_precision("no", "cpu") == ("no", "fp32 (--mixed-precision no)")
    with pytest.raises(ValueError, match="auto, no, bf16"):
        hardware.resolve_mixed_precision("fp16", "cpu")


def test_unreadable_cpu_features_mean_fp32(cpu):
    cpu({})
    assert hardware.resolve_mixed_precision("auto", "cpu")[0] == "no"
