"""Amdahl's bound on a step's `ours / plain` ratio: each part of a pretraining step timed alone.

``FusMAE`` and ``plain`` (bench/plain_model.py) run the same code for most of a step: the ViT blocks
and final norm of the encoder, the decoders' embedding, blocks, norm and prediction head (one textbook
``Block`` class, same weights), AdamW over the same parameters and the masking draw. Only the patch
embedding, the cross-modal block, the decoders' unshuffle and the loss differ. Whatever our own parts
cost, a step of ours cannot take less than the shared parts, so

    ours / plain  <=  t(plain step) / t(shared parts)

This script measures, at the step benchmark's shapes and one masking draw: both full steps (as
``bench/step.py``: masking + forward + backward + AdamW), the shared parts (forward + backward with a
fixed upstream gradient, so no extra loss work), and, for the table, the parts that differ in each
model. Writes ``bench/results/step_parts_<device>.json`` and ``.md``.

    python bench/step_parts.py                       # tiny and small, fp32, eager, B=32, consistent
    python bench/step_parts.py --presets small --masking independent
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from fusmae_fast import ops
from fusmae_fast.bench import devices, report, timing
from fusmae_fast.bench.plain_model import forward_loss, plain_from
from fusmae_fast.bench.step import build
from fusmae_fast.config import ModelConfig
from fusmae_fast.masking import random_masking
from fusmae_fast.model import FusMAE
from fusmae_fast.optim import adamw


def _fwd_bwd(fn: Callable[[], torch.Tensor], grad: torch.Tensor | None = None) -> Callable[[], None]:
    """fn() then backward with a fixed upstream gradient (made once, from the first output)."""
    holder: dict[str, torch.Tensor] = {}

    def run() -> None:
        out = fn()
        if "g" not in holder:
            holder["g"] = grad if grad is not None else torch.randn_like(out)
        out.backward(holder["g"])

    return run


def measure_parts(
    preset: str, batch: int, masking_kind: str, variant: str, device: torch.device, seed: int, reps: int
) -> dict[str, Any]:
    """Times in ms (p50 of ``reps``) of both steps, the shared parts and each model's own parts."""
    cfg = ModelConfig.from_name(preset, variant=variant, masking=masking_kind)
    torch.manual_seed(seed)
    ours = FusMAE(cfg).to(device).train()
    plain = plain_from(ours).train()
    g = torch.Generator().manual_seed(seed + 1)
    s1 = torch.randn(batch, cfg.s1_channels, cfg.img_size, cfg.img_size, generator=g).to(device)
    s2 = torch.randn(batch, cfg.s2_channels, cfg.img_size, cfg.img_size, generator=g).to(device)
    mgen = torch.Generator().manual_seed(seed + 2)
    mk = random_masking(batch, cfg.num_patches, cfg.mask_ratio, cfg.masking, generator=mgen, device=device)
    n, k, p = cfg.num_patches, mk.num_kept, cfg.patch_size

    def t(fn: Callable[[], Any]) -> float:
        return timing.measure(fn, device, warmup=2, reps=reps, min_reps=3, budget_s=30.0).p50

    tokens = ours.embed(s1, s2, mk).detach().requires_grad_(True)
    enc_in = torch.cat([tokens, tokens[:, :1]], dim=1).detach().requires_grad_(True)  # K tokens + CLS

    def vit() -> torch.Tensor:
        x = enc_in
        for blk in ours.blocks:
            x = blk(x)
        return ours.norm(x)

    latent = tokens.detach().requires_grad_(True)
    shared: dict[str, float] = {"encoder ViT blocks + norm": t(_fwd_bwd(vit))}
    for name, dec in (("S1", ours.decoder_s1), ("S2", ours.decoder_s2)):
        dec_in = torch.randn(batch, n, cfg.decoder_embed_dim, device=device, requires_grad=True)

        def core(dec=dec, dec_in=dec_in) -> torch.Tensor:
            x = dec_in
            for blk in dec.blocks:
                x = blk(x)
            return dec.pred(dec.norm(x))

        shared[f"decoder {name}: embed"] = t(_fwd_bwd(lambda dec=dec: dec.embed(latent)))
        shared[f"decoder {name}: blocks + norm + head"] = t(_fwd_bwd(core))
    opt = adamw(ours.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    for prm in ours.parameters():
        prm.grad = torch.randn_like(prm) * 1e-3
    shared["AdamW step"] = t(opt.step)
    shared["masking draw"] = t(
        lambda: random_masking(batch, n, cfg.mask_ratio, cfg.masking, generator=mgen, device=device)
    )
    del opt
    ours.zero_grad(set_to_none=True)

    xa_ours = ours.xattn_encoder if variant == "xae" else ours.xattn_decoder
    xa_plain = plain.xattn_encoder if variant == "xae" else plain.xattn_decoder
    pred1 = torch.randn(batch, n, p * p * cfg.s1_channels, device=device, requires_grad=True)
    pred2 = torch.randn(batch, n, p * p * cfg.s2_channels, device=device, requires_grad=True)
    one = torch.ones((), device=device)
    own: dict[str, dict[str, float]] = {
        "patch embedding (S1 + S2)": {
            "fusmae": t(_fwd_bwd(lambda: ours.embed(s1, s2, mk))),
            "plain": t(_fwd_bwd(lambda: plain.embed(s1, s2, mk))),
        },
        "cross-modal block": {
            "fusmae": t(_fwd_bwd(lambda: xa_ours(tokens, mk.split, "torch"))),
            "plain": t(_fwd_bwd(lambda: xa_plain(tokens, mk.split))),
        },
        "loss (S1 + S2)": {
            "fusmae": t(
                _fwd_bwd(
                    lambda: (
                        ops.masked_mse(pred1, s1, mk.mask_s1, p, cfg.norm_pix_loss)
                        + ops.masked_mse(pred2, s2, mk.mask_s2, p, cfg.norm_pix_loss)
                    ),
                    one,
                )
            ),
            "plain": t(
                _fwd_bwd(
                    lambda: (
                        forward_loss(s1, pred1, mk.mask[:, :n], p, cfg.norm_pix_loss)
                        + forward_loss(s2, pred2, mk.mask[:, n:], p, cfg.norm_pix_loss)
                    ),
                    one,
                )
            ),
        },
    }
    steps: dict[str, float] = {}
    for provider in ("fusmae", "plain"):
        scfg = dict(
            device=device.type,
            seed=seed,
            kernels="torch",
            provider=provider,
            preset=preset,
            variant=variant,
            masking=masking_kind,
            batch=batch,
            compile=False,
            precision="fp32",
        )
        _, step, _, _ = build(scfg)
        steps[provider] = t(step)
    shared_ms = sum(shared.values())
    return {
        "preset": preset,
        "batch": batch,
        "variant": variant,
        "masking": masking_kind,
        "kept_tokens": k,
        "step_ms": steps,
        "shared_ms": shared,
        "shared_total_ms": shared_ms,
        "own_ms": own,
        "ratio_measured": steps["plain"] / steps["fusmae"],
        "ratio_bound": steps["plain"] / shared_ms,
        "shared_fraction_of_plain": shared_ms / steps["plain"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/step_parts.py", description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--masking", default="consistent", help="consistent and/or independent")
    ap.add_argument("--variant", default="xae", choices=("xae", "xad"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per part (after 2 warm-ups)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = devices.pin_threads(args.threads)
    info = devices.run_info(device, threads)
    t0 = time.perf_counter()
    rows = []
    for preset in [x for x in args.presets.split(",") if x]:
        for masking_kind in [x for x in args.masking.split(",") if x]:
            print(f"# {preset} {args.variant}/{masking_kind} B={args.batch}", flush=True)
            r = measure_parts(preset, args.batch, masking_kind, args.variant, device, args.seed, args.reps)
            print(
                f"  plain {r['step_ms']['plain']:.1f} ms, ours {r['step_ms']['fusmae']:.1f} ms, shared "
                f"{r['shared_total_ms']:.1f} ms -> measured {r['ratio_measured']:.2f}x, "
                f"bound {r['ratio_bound']:.2f}x",
                flush=True,
            )
            rows.append(r)
    result = {"benchmark": "step_parts", "info": info, "rows": rows}
    devices.finish_run(result, t0, args.out_dir, device, report.step_parts_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
