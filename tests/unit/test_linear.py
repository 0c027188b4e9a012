"""fusmae_fast.linear: the fused CPU form where no gradient is taken, F.linear everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fusmae_fast.linear as fl
from fusmae_fast.config import ModelConfig
from fusmae_fast.model import FusMAE, Mlp

needs_op = pytest.mark.skipif(
    fl._LINEAR_POINTWISE is None, reason="no oneDNN bf16 here (no oneDNN, or a CPU without AVX-512)"
)


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


def _tiny_model_and_images() -> tuple[FusMAE, torch.Tensor, torch.Tensor]:
    """A seeded tiny model in eval mode and a batch of two S1 and S2 images for it."""
    torch.manual_seed(0)
    model = FusMAE(ModelConfig.from_name("tiny")).eval()
    c = model.config
    s1 = torch.randn(2, c.s1_channels, c.img_size, c.img_size)
    s2 = torch.randn(2, c.s2_channels, c.img_size, c.img_size)
    return model, s1, s2


@needs_op
def test_encode_takes_the_fused_form_and_stays_close_to_unfused(monkeypatch):
    model, s1, s2 = _tiny_model_and_images()
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


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_the_gate_says_where_onednn_runs_bf16():
    # oneDNN's op itself, called on bf16: it runs exactly where the gate lets the fused form run (on an
    # AVX2-only CPU it raises "could not create a primitive descriptor")
    op = torch.ops.mkldnn._linear_pointwise
    layer = torch.nn.Linear(16, 8).bfloat16()
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    try:
        with torch.inference_mode():
            op(x, layer.weight, layer.bias, "none", [], "")
        runs = True
    except RuntimeError:
        runs = False
    assert runs == fl.mkldnn_bf16_supported() == (fl._LINEAR_POINTWISE is not None)


@pytest.mark.parametrize("autocast", [True, False])
def test_bf16_inference_runs_on_every_cpu(autocast):
    # encode in bf16 (autocast, or bf16 weights as a bf16 checkpoint loads) on whatever CPU this is:
    # fused where oneDNN runs bf16, F.linear elsewhere; close to the fp32 result either way
    model, s1, s2 = _tiny_model_and_images()
    with torch.inference_mode():
        ref = model.encode(s1, s2).tokens
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = model.encode(s1, s2).tokens
        else:
            got = model.bfloat16().encode(s1.bfloat16(), s2.bfloat16()).tokens
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    rel = ((got.float() - ref).norm() / ref.norm()).item()
    assert rel < 0.03, rel


def test_mlp_equals_fc2_gelu_fc1_in_fp32():
    mlp = Mlp(24, 48)
    x = torch.randn(5, 24)
    with torch.inference_mode():
        assert torch.allclose(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))), atol=1e-6, rtol=1e-6)
