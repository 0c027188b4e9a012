"""fusmae_fast.optim.adamw: the fused AdamW where torch has one, the same update as the default one."""

import torch

from fusmae_fast.optim import adamw


def _run(opt_fn, steps=5):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.GELU(), torch.nn.Linear(5, 3))
    groups = [
        {"params": [model[0].weight, model[2].weight]},
        {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
    ]
    opt = opt_fn(groups)
    x = torch.randn(11, 7)
    for _ in range(steps):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt, [p.detach().clone() for p in model.parameters()]


def test_fused_on_cpu_and_same_update_as_default():
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    fused, got = _run(lambda g: adamw(g, **kw))
    assert fused.defaults["fused"] is True
    _, want = _run(lambda g: torch.optim.AdamW(g, **kw))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_an_explicit_choice_is_kept():
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert not adamw(p, lr=1e-3, foreach=False).defaults.get("fused")
    assert adamw(p, lr=1e-3, fused=False).defaults["fused"] is False
