"""fusmae_fast.linear: the fused CPU form where no gradient is taken, F.linear everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fusmae_fast.linear as fl
from fusmae_fast.config import ModelConfig
from fusmae_fast.model import FusMAE, Mlp

needs_op = pytest.mark.skipif(fl._LINEAR_POINTWISE is None, reason="torch built without oneDNN")


def _count_fused(monkeypatch) -> list[int]:
    calls = [0]
    real = fl._LINEAR_POINTWISE

    def spy(*args):
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(fl, "_LINEAR_POINTWISE", spy)
    return calls


@needs_op
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 37, 451])
def test_fused_bf16_is_no_less_accurate_than_f_linear(monkeypatch, gelu, bias, rows):
    torch.manual_seed(rows)
    layer = torch.nn.Linear(40, 72, bias=bias)
    x = torch.randn(2, rows, 40)
    calls = _count_fused(monkeypatch)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = fl.linear(x, layer, gelu=gelu)
        y = layer(x)
        plain = F.gelu(y) if gelu else y
    assert calls[0] == 1 and got.dtype == plain.dtype == torch.bfloat16
    # the reference: the bf16-rounded operands in fp64
    xr, w = x.bfloat16().double(), layer.weight.bfloat16().double()
    b = None if layer.bias is None else layer.bias.bfloat16().double()
    ref = F.linear(xr, w, b)
    ref = F.gelu(ref) if gelu else ref
    err = (got.double() - ref).abs().max().item()
    plain_err = (plain.double() - ref).abs().max().item()
    assert err <= 2 * plain_err + 1e-3, (err, plain_err)


@needs_op
def test_unfused_where_a_gradient_is_taken_or_fp32(monkeypatch):
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    calls = _count_fused(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fl.linear(x, layer, gelu=True)
    y.float().sum().backward()
    assert layer.weight.grad is not None and calls[0] == 0
    with torch.inference_mode():
        assert torch.equal(fl.linear(x, layer), layer(x))  # fp32: F.linear itself
    assert calls[0] == 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fl.linear(x, layer)
    assert calls[0] == 1


@needs_op
def test_encode_takes_the_fused_form_and_stays_close_to_unfused(monkeypatch):
    torch.manual_seed(0)
    model = FusMAE(ModelConfig.from_name("tiny")).eval()
    c = model.config
    s1 = torch.randn(2, c.s1_channels, c.img_size, c.img_size)
    s2 = torch.randn(2, c.s2_channels, c.img_size, c.img_size)
    calls = _count_fused(monkeypatch)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = model.encode(s1, s2).tokens.double()
        monkeypatch.setattr(fl, "_ENABLED", False)
        plain = model.encode(s1, s2).tokens.double()
    assert calls[0] > 0
    with torch.inference_mode():
        ref = model.double().encode(s1.double(), s2.double()).tokens
    err, plain_err = ((t - ref).norm() / ref.norm() for t in (fused, plain))
    assert err <= 2 * plain_err + 1e-3, (err, plain_err)


def test_mlp_equals_fc2_gelu_fc1_in_fp32():
    mlp = Mlp(24, 48)
    x = torch.randn(5, 24)
    with torch.inference_mode():
        assert torch.allclose(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))), atol=1e-6, rtol=1e-6)
