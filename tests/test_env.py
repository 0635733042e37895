import random

import numpy as np
import pytest
import torch

import dlbook


def test_setup_seeds_everything_and_prints_provenance(capsys):
    dlbook.setup(seed=3, profile="smoke")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    dlbook.setup(seed=3, profile="smoke")
    second = (random.random(), np.random.rand(), torch.rand(1).item())
    assert first == second
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "profile=smoke" in out and "CPU threads=" in out


def test_setup_returns_the_best_device():
    device = dlbook.setup(quiet=True)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device.type == expected


def test_bad_seed_and_profile_are_refused():
    with pytest.raises(ValueError, match="seed"):
        dlbook.setup(seed=-1)
    with pytest.raises(ValueError, match="unknown profile"):
        dlbook.setup(profile="tiny")


def test_cpu_features_reads_the_flags(monkeypatch, tmp_path):
    import builtins

    from dlbook import env

    monkeypatch.delenv(env.FEATURES_OVERRIDE, raising=False)
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(fake if f == "/proc/cpuinfo" else f, *a, **k))
    assert env.cpu_features() == ("avx2", "avx512f", "avx512_bf16")
    assert env.device_name(torch.device("cpu")) == "Test CPU (avx2, avx512f, avx512_bf16)"
    fake.write_text("model name\t: Bare CPU\n")
    assert env.cpu_features() == () and env.device_name(torch.device("cpu")) == "Bare CPU"


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("avx2,avx512f,avx512_vnni,avx512_bf16,amx_bf16,amx_int8", "cpu-amx"),
        ("avx2,avx512f,avx512_vnni,avx512_bf16", "cpu-avx512-bf16"),
        ("avx2,avx512f,avx512_vnni", "cpu-avx512-vnni"),
        ("avx2,avx512f", "cpu-avx512"),
        ("avx2,avx_vnni", "cpu-avx2"),  # AVX-VNNI without AVX-512: FBGEMM runs its AVX2 kernels
        ("avx2", "cpu-avx2"),
        ("none", "cpu-other"),
    ],
)
def test_hardware_class_follows_the_instruction_sets(monkeypatch, flags, expected):
    from dlbook import env

    monkeypatch.setenv(env.FEATURES_OVERRIDE, flags)
    assert env.hardware_class("cpu") == expected
    assert f"class={expected}" in env.provenance(torch.device("cpu"), profile="smoke").line()


def test_hardware_class_refuses_bad_input(monkeypatch):
    from dlbook import env

    monkeypatch.setenv(env.FEATURES_OVERRIDE, "avx2,sse9")
    with pytest.raises(ValueError, match="unknown instruction sets"):
        env.cpu_features()
    monkeypatch.delenv(env.FEATURES_OVERRIDE)
    with pytest.raises(ValueError, match="no hardware class"):
        env.hardware_class("meta")
    assert env.hardware_class("cuda") == "cuda"


def test_resolve_device_names_models_and_bad_input():
    import pytest
    import torch

    from dlbook.env import pick_device, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == pick_device()
    assert resolve_device(None, model=torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert resolve_device(None, model=torch.nn.ReLU()) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("no-such-device")


def test_ieee_float32_sets_every_precision_and_leaves_torch_export_working():
    import torch

    from dlbook import env

    env.setup(quiet=True)
    b = torch.backends
    if hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision"):
        assert (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision) == ("ieee",) * 3
    assert not b.cudnn.allow_tf32 and not b.cuda.matmul.allow_tf32  # the legacy switches agree (and can be read)

    class Conv(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.conv1d(x, torch.ones(2, 2, 3)).relu()

    x = torch.randn(1, 2, 5)
    program = torch.export.export(Conv(), (x,))  # reads cuDNN's legacy switch: raised before the fix
    torch.testing.assert_close(program.module()(x), Conv()(x))
    assert not b.cudnn.allow_tf32 and not b.cuda.matmul.allow_tf32  # no TF32 after the export either
