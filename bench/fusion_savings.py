"""FLOPs and bytes each token/loss fusion removes per pretraining step: computed, not measured.

Usage
    python bench/fusion_savings.py                       # base preset, batch 200, 75 % masking
    python bench/fusion_savings.py --preset small --batch 64 --act-bytes 4 --out /tmp/x.json

For one step (forward + backward) of the preset (img 120, P = 8 -> N = 225 patches per modality) the
script counts, pass by pass, the work of the textbook way (``bench/plain_model.py``: MAE's code) and of
our Triton path, and prints per fusion: FLOPs and DRAM bytes of each, and what the fusion removes.
Every number is a formula evaluated here (the JSON keeps each pass with its formula); nothing is timed.

Symbols
    B batch, N patches per modality, k_i kept / m_i = N - k_i masked patches of modality i (consistent
    masking: k_i = N (1 - r) exactly; independent masking gives the same totals in expectation),
    K = k_1 + k_2 encoder tokens, C encoder width, d decoder width, C_i channels, R_i = D_i = C_i P^2
    pixels per patch, e activation bytes (2: bf16/fp16 autocast), e_img image bytes (4: fp32 inputs),
    f = 4 (fp32 loss internals, parameter grads, partial sums), S the batch splits of our reductions and
    S_w the row splits of d weight (``reductions.batch_splits`` / ``masked_patch_embed.dw_splits``).
Conventions
    A multiply-add is 2 FLOPs, any other elementwise op 1. Bytes are DRAM traffic with every tensor a
    pass touches read or written once (re-reads inside a kernel are taken to hit cache); a broadcast
    operand (expanded mask token, pos rows shared by the batch) counts once. Images and pos_embed need
    no gradient (as in the model). Index tensors: int64 (8 bytes), the inverse map int32.
The fusions
    1. masked patch embedding: Conv2d over all N patches, then pick the kept ones -> one GEMM over the
       kept patches read straight from the image (forward: 2 B N R_i C -> 2 B k_i R_i C FLOPs).
    2. token assembly: + pos over the full embeddings, torch.cat of both modalities, torch.gather of the
       kept tokens (and the gather's zero-fill + scatter in the backward) -> pos/bias added in the GEMM
       epilogue, rows written straight into the modality-sorted layout (our ragged form: each modality's
       launch writes zero rows for the other's slots, and the model adds the two (B, K, C) results).
    3. decoder input (per decoder): torch.cat([x, mask tokens]) (B, 2N, d), torch.gather(ids_restore),
       + pos -> one scatter_tokens pass; backward: d latent rows stored, d mask_token summed.
    4. loss straight from the image (per modality): full patchify copy, per-patch mean/var/normalise
       passes over all B N patches, squared error over every patch, then the mask -> one pass over the
       masked patches only (forward), one pass writing d pred (backward). It recomputes the per-patch
       statistics in the backward, so it does more FLOPs than the textbook loss (8 + 7 per masked
       element vs 9 + 2 per element of every patch) while moving a fraction of the bytes.
    5. decoder projection on masked tokens only (per decoder): the head Linear(d, D_i) runs on all N
       tokens although the loss reads only the m_i masked ones. model.py (``loss_only=True``, pretraining's
       opt-in ``--masked-projection``, consistent masking) gathers the masked rows (gather_tokens),
       projects them and scatters them back with zeros on visible rows (scatter_tokens); counted as
       exactly those passes.
       It removes FLOPs; the extra gather/scatter passes cost bytes (the GEMM-prologue gather that
       would avoid them is not written).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusmae_fast.bench import devices
from fusmae_fast.config import ModelConfig
from fusmae_fast.kernels.masked_patch_embed import dw_splits
from fusmae_fast.kernels.reductions import batch_splits

RESULTS = Path(__file__).resolve().parent / "results" / "fusion_savings.json"
RTX3090_BYTES_PER_S = 936e9
"""DRAM bandwidth of the target GPU of docs/design.md §6, used only to express removed bytes as a time
(a model)."""
INDEX = 8
INV = 4
F32 = 4


@dataclass
class Pass:
    """One kernel-level pass: its FLOPs and DRAM bytes, and the formula they come from."""

    what: str
    phase: str  # "fwd" or "bwd"
    flops: int
    read: int
    written: int
    formula: str

    @property
    def bytes(self) -> int:
        return self.read + self.written


@dataclass
class Fusion:
    name: str
    status: str
    textbook: list[Pass] = field(default_factory=list)
    ours: list[Pass] = field(default_factory=list)

    def total(self, side: str, key: str) -> int:
        return sum(getattr(p, key) for p in getattr(self, side))


@dataclass
class Shapes:
    B: int
    N: int
    k: tuple[int, int]
    C: int
    d: int
    chans: tuple[int, int]
    P: int
    e: int
    e_img: int

    @property
    def K(self) -> int:
        return sum(self.k)

    def m(self, i: int) -> int:
        return self.N - self.k[i]

    def R(self, i: int) -> int:
        return self.chans[i] * self.P * self.P


def _mod(i: int) -> str:
    return ("S1", "S2")[i]


def patch_embedding(s: Shapes) -> Fusion:
    f = Fusion("1 masked patch embedding", "in use")
    B, N, C, e, ei = s.B, s.N, s.C, s.e, s.e_img
    for i in range(2):
        k, R, tag = s.k[i], s.R(i), _mod(i)
        f.textbook.append(
            Pass(
                f"Conv2d over all N patches ({tag})",
                "fwd",
                2 * B * N * R * C + B * N * C,
                B * N * R * ei + R * C * e,
                B * N * C * e,
                "FLOPs 2BNR_iC + BNC; read BNR_i e_img + R_iC e; write BNC e",
            )
        )
        f.textbook.append(
            Pass(
                f"Conv2d backward: d weight, d bias over all N patches ({tag})",
                "bwd",
                2 * B * N * R * C + B * N * C,
                B * N * C * e + B * N * R * ei,
                (R * C + C) * F32,
                "FLOPs 2BNR_iC + BNC; read BNC e + BNR_i e_img; write (R_iC + C) f",
            )
        )
        S_w, _ = dw_splits(B * s.K, C, R)
        S = batch_splits(B, N, C)
        f.ours.append(
            Pass(
                f"masked_patch_embed GEMM over the kept patches ({tag})",
                "fwd",
                2 * B * k * R * C + B * k * C,
                B * k * R * ei + R * C * e,
                B * k * C * e,
                "FLOPs 2Bk_iR_iC + Bk_iC; read Bk_iR_i e_img + R_iC e; write Bk_iC e (useful rows)",
            )
        )
        f.ours.append(
            Pass(
                f"d weight split-K over the kept rows + fixed-order sum ({tag})",
                "bwd",
                2 * B * k * R * C,
                B * k * C * e + B * k * R * ei + S_w * C * R * F32,
                S_w * C * R * F32 + R * C * F32,
                "FLOPs 2Bk_iR_iC; read Bk_iC e + Bk_iR_i e_img + S_w CR_i f; write S_w CR_i f + R_iC f",
            )
        )
        f.ours.append(
            Pass(
                f"d bias: inverse map, batch-split column sums, fixed-order sums ({tag})",
                "bwd",
                B * k * C,
                B * s.K * INDEX + B * N * INV + B * k * C * e + S * N * C * F32,
                B * N * INV + B * k * INV + S * N * C * F32 + C * F32,
                "FLOPs Bk_iC; read BK 8 + BN 4 + Bk_iC e + SNC f; write BN 4 + Bk_i 4 + SNC f + C f",
            )
        )
    return f


def token_assembly(s: Shapes) -> Fusion:
    f = Fusion("2 token assembly (+pos, cat, gather)", "in use")
    B, N, K, C, e = s.B, s.N, s.K, s.C, s.e
    for i in range(2):
        f.textbook.append(
            Pass(
                f"+ pos over the full embedding ({_mod(i)})",
                "fwd",
                B * N * C,
                B * N * C * e + N * C * e,
                B * N * C * e,
                "FLOPs BNC; read BNC e + NC e; write BNC e",
            )
        )
    f.textbook.append(
        Pass(
            "torch.cat of both modalities (B, 2N, C)",
            "fwd",
            0,
            2 * B * N * C * e,
            2 * B * N * C * e,
            "read 2BNC e; write 2BNC e",
        )
    )
    f.textbook.append(
        Pass(
            "torch.gather of the kept tokens",
            "fwd",
            0,
            B * K * C * e + B * K * INDEX,
            B * K * C * e,
            "read BKC e + BK 8; write BKC e",
        )
    )
    f.textbook.append(
        Pass(
            "gather backward: zero (B, 2N, C), scatter the kept rows",
            "bwd",
            0,
            B * K * C * e + B * K * INDEX,
            2 * B * N * C * e + B * K * C * e,
            "read BKC e + BK 8; write 2BNC e + BKC e",
        )
    )
    f.ours.append(
        Pass(
            "epilogue: + pos rows and ids (both launches), zero rows of the other modality's slots",
            "fwd",
            B * K * C,
            B * K * C * e + 2 * B * K * INDEX,
            B * K * C * e,
            "FLOPs BKC; read BKC e (pos rows) + 2BK 8; write BKC e (K - k_i zero rows per modality)",
        )
    )
    f.ours.append(
        Pass(
            "model: S1 part + S2 part (ragged form)",
            "fwd",
            B * K * C,
            2 * B * K * C * e,
            B * K * C * e,
            "FLOPs BKC; read 2BKC e; write BKC e",
        )
    )
    return f


def decoder_input(s: Shapes) -> Fusion:
    f = Fusion("3 decoder input (cat, gather, +pos)", "in use")
    B, N, K, d, e = s.B, s.N, s.K, s.d, s.e
    S = batch_splits(B, N, d)
    for i in range(2):
        k, m, tag = s.k[i], s.m(i), _mod(i)
        f.textbook += [
            Pass(
                f"cat([x, mask tokens]) (B, 2N, d) ({tag})",
                "fwd",
                0,
                B * K * d * e + d * e,
                2 * B * N * d * e,
                "read BKd e + d e; write 2BNd e",
            ),
            Pass(
                f"gather with ids_restore ({tag})",
                "fwd",
                0,
                B * N * d * e + B * N * INDEX,
                B * N * d * e,
                "read BNd e + BN 8; write BNd e",
            ),
            Pass(
                f"+ decoder pos ({tag})",
                "fwd",
                B * N * d,
                B * N * d * e + N * d * e,
                B * N * d * e,
                "FLOPs BNd; read BNd e + Nd e; write BNd e",
            ),
            Pass(
                f"gather backward: zero (B, 2N, d), scatter ({tag})",
                "bwd",
                0,
                B * N * d * e + B * N * INDEX,
                2 * B * N * d * e + B * N * d * e,
                "read BNd e + BN 8; write 2BNd e + BNd e",
            ),
            Pass(
                f"cat backward: d mask_token = sum over the (B, 2N - K, d) slice ({tag})",
                "bwd",
                B * (2 * N - K) * d,
                B * (2 * N - K) * d * e,
                d * F32,
                "FLOPs B(2N-K)d; read B(2N-K)d e; write d f",
            ),
        ]
        f.ours += [
            Pass(
                f"scatter_tokens ({tag})",
                "fwd",
                B * N * d,
                B * k * d * e + B * N * INDEX + N * d * e + d * F32,
                B * N * d * e,
                "FLOPs BNd; read Bk_id e + BN 8 + Nd e + d f; write BNd e",
            ),
            Pass(
                f"scatter_tokens backward: d latent rows, d mask_token partials ({tag})",
                "bwd",
                B * m * d,
                B * N * d * e + B * N * INDEX + S * N * d * F32,
                B * K * d * e + B * k * d * e + S * N * d * F32 + d * F32,
                "FLOPs Bm_id; read BNd e + BN 8 + SNd f; write BKd e (memset) + Bk_id e + SNd f + d f",
            ),
        ]
    return f


def loss(s: Shapes) -> Fusion:
    f = Fusion("4 loss straight from the image", "in use")
    B, N, e, ei = s.B, s.N, s.e, s.e_img
    for i in range(2):
        D, m, tag = s.R(i), s.m(i), _mod(i)
        T = B * N * D
        f.textbook += [
            Pass(f"patchify copy ({tag})", "fwd", 0, T * ei, T * F32, "read BND_i e_img; write BND_i f"),
            Pass(
                f"mean, var per patch ({tag})",
                "fwd",
                4 * T,
                2 * T * F32,
                2 * B * N * F32,
                "FLOPs 4BND_i (mean 1, var 3); read 2BND_i f; write 2BN f",
            ),
            Pass(
                f"(target - mean) / std ({tag})",
                "fwd",
                2 * T,
                2 * T * F32,
                2 * T * F32,
                "FLOPs 2BND_i; read 2BND_i f; write 2BND_i f",
            ),
            Pass(f"pred.float() ({tag})", "fwd", 0, T * e, T * F32, "read BND_i e; write BND_i f"),
            Pass(
                f"(pred - target)^2 over every patch ({tag})",
                "fwd",
                2 * T,
                3 * T * F32,
                2 * T * F32,
                "FLOPs 2BND_i; read 3BND_i f; write 2BND_i f",
            ),
            Pass(
                f"mean over the patch, x mask, sum ({tag})",
                "fwd",
                T + 2 * B * N,
                T * F32 + B * N,
                B * N * F32,
                "FLOPs BND_i + 2BN; read BND_i f + BN; write BN f",
            ),
            Pass(
                f"backward: (B, N, D) grad of the square, cast to pred's dtype ({tag})",
                "bwd",
                2 * T,
                2 * T * F32,
                T * F32 + T * e,
                "FLOPs 2BND_i; read 2BND_i f; write BND_i f + BND_i e",
            ),
        ]
        f.ours += [
            Pass(
                f"masked_mse forward over the masked patches ({tag})",
                "fwd",
                8 * B * m * D,
                B * N + B * m * D * (e + ei),
                0,
                "FLOPs 8Bm_iD_i; read BN (mask) + Bm_iD_i (e + e_img)",
            ),
            Pass(
                f"masked_mse backward: recompute the statistics, d pred, zeros on visible ({tag})",
                "bwd",
                7 * B * m * D,
                B * N + B * m * D * (e + ei),
                T * e,
                "FLOPs 7Bm_iD_i; read BN + Bm_iD_i (e + e_img); write BND_i e",
            ),
        ]
    return f


def masked_projection(s: Shapes) -> Fusion:
    f = Fusion("5 decoder projection on masked tokens", "opt-in (--masked-projection), off by default")
    B, N, d, e = s.B, s.N, s.d, s.e
    for i in range(2):
        D, m, tag = s.R(i), s.m(i), _mod(i)
        f.textbook += [
            Pass(
                f"head Linear(d, D_i) on all N tokens ({tag})",
                "fwd",
                2 * B * N * d * D,
                B * N * d * e + d * D * e,
                B * N * D * e,
                "FLOPs 2BNdD_i; read BNd e + dD_i e; write BND_i e",
            ),
            Pass(
                f"head backward on all N tokens ({tag})",
                "bwd",
                4 * B * N * d * D,
                B * N * D * e + B * N * d * e,
                B * N * d * e + d * D * F32,
                "FLOPs 4BNdD_i; read BND_i e + BNd e; write BNd e + dD_i f",
            ),
            Pass(
                f"loss backward writes d pred for all N tokens ({tag})",
                "bwd",
                0,
                0,
                B * (N - m) * D * e,
                "write B(N - m_i)D_i e (the visible rows' zeros)",
            ),
        ]
        f.ours += [
            Pass(
                f"gather_tokens: the masked rows of the decoder output ({tag})",
                "fwd",
                0,
                B * m * d * e + B * m * INDEX,
                B * m * d * e,
                "read Bm_id e + Bm_i 8; write Bm_id e",
            ),
            Pass(
                f"head Linear(d, D_i) on the masked rows ({tag})",
                "fwd",
                2 * B * m * d * D,
                B * m * d * e + d * D * e,
                B * m * D * e,
                "FLOPs 2Bm_idD_i; read Bm_id e + dD_i e; write Bm_iD_i e",
            ),
            Pass(
                f"scatter_tokens: rows back to (B, N, D_i), zeros on visible ({tag})",
                "fwd",
                0,
                B * m * D * e + B * N * INDEX,
                B * N * D * e,
                "read Bm_iD_i e + BN 8; write BND_i e",
            ),
            Pass(
                f"scatter backward: d rows gathered from d pred ({tag})",
                "bwd",
                0,
                B * m * D * e + B * N * INDEX,
                B * m * D * e,
                "read Bm_iD_i e + BN 8; write Bm_iD_i e",
            ),
            Pass(
                f"head backward on the masked rows ({tag})",
                "bwd",
                4 * B * m * d * D,
                B * m * D * e + B * m * d * e,
                B * m * d * e + d * D * F32,
                "FLOPs 4Bm_idD_i; read Bm_iD_i e + Bm_id e; write Bm_id e + dD_i f",
            ),
            Pass(
                f"gather backward: d rows to (B, N, d), zeros on visible ({tag})",
                "bwd",
                0,
                B * m * d * e + B * N * INDEX,
                B * N * d * e,
                "read Bm_id e + BN 8; write BNd e",
            ),
        ]
    return f


def compute(
    cfg: ModelConfig, batch: int, mask_ratio: float, act_bytes: int, img_bytes: int
) -> dict[str, Any]:
    kept = int(cfg.num_patches * (1.0 - mask_ratio))  # consistent masking: per modality, exact
    s = Shapes(
        B=batch,
        N=cfg.num_patches,
        k=(kept, kept),
        C=cfg.embed_dim,
        d=cfg.decoder_embed_dim,
        chans=(cfg.s1_channels, cfg.s2_channels),
        P=cfg.patch_size,
        e=act_bytes,
        e_img=img_bytes,
    )
    fusions = [patch_embedding(s), token_assembly(s), decoder_input(s), loss(s), masked_projection(s)]
    rows = []
    for fu in fusions:
        row: dict[str, Any] = {"fusion": fu.name, "status": fu.status}
        for side in ("textbook", "ours"):
            row[f"{side}_flops"] = fu.total(side, "flops")
            row[f"{side}_bytes"] = fu.total(side, "bytes")
        row["flops_removed"] = row["textbook_flops"] - row["ours_flops"]
        row["bytes_removed"] = row["textbook_bytes"] - row["ours_bytes"]
        row["dram_time_removed_us_rtx3090_model"] = row["bytes_removed"] / RTX3090_BYTES_PER_S * 1e6
        row["passes"] = {
            side: [asdict(p) | {"bytes": p.bytes} for p in getattr(fu, side)] for side in ("textbook", "ours")
        }
        rows.append(row)
    in_use = [r for r in rows if r["status"].startswith("in use")]
    return {
        "kind": "computed, not measured",
        "shapes": asdict(s) | {"K": s.K, "m": [s.m(0), s.m(1)], "R": [s.R(0), s.R(1)]},
        "mask_ratio": mask_ratio,
        "masking": "consistent (independent masking: the same totals in expectation)",
        "assumptions": __doc__.split("Conventions")[1].split("The fusions")[0].strip(),
        "fusions": rows,
        "total_in_use": {
            "flops_removed": sum(r["flops_removed"] for r in in_use),
            "bytes_removed": sum(r["bytes_removed"] for r in in_use),
        },
    }


def _fmt(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def format_table(result: dict[str, Any]) -> str:
    head = (
        "fusion",
        "FLOPs textbook",
        "FLOPs ours",
        "FLOPs removed",
        "bytes textbook",
        "bytes ours",
        "bytes removed",
        "DRAM us @936GB/s",
        "status",
    )
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in result["fusions"]:
        lines.append(
            " | ".join(
                (
                    r["fusion"],
                    _fmt(r["textbook_flops"], "FLOP"),
                    _fmt(r["ours_flops"], "FLOP"),
                    _fmt(r["flops_removed"], "FLOP"),
                    _fmt(r["textbook_bytes"], "B"),
                    _fmt(r["ours_bytes"], "B"),
                    _fmt(r["bytes_removed"], "B"),
                    f"{r['dram_time_removed_us_rtx3090_model']:.0f}",
                    r["status"],
                )
            )
        )
    t = result["total_in_use"]
    flops, nbytes = _fmt(t["flops_removed"], "FLOP"), _fmt(t["bytes_removed"], "B")
    lines.append(f"fusions in use, total removed per step: {flops}, {nbytes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", help="ModelConfig preset (tiny, small, base)")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--act-bytes", type=int, default=2, help="activation element size (2: bf16 autocast)")
    parser.add_argument("--img-bytes", type=int, default=4, help="image element size (4: fp32 inputs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cfg = ModelConfig.from_name(args.preset)
    result = compute(cfg, args.batch, args.mask_ratio, args.act_bytes, args.img_bytes)
    result["preset"] = args.preset
    result["git"] = devices.git_sha()
    print(
        f"Fusion savings per pretraining step (fwd + bwd), preset {args.preset}, batch {args.batch}, "
        f"mask ratio {args.mask_ratio}: COMPUTED from formulas, not measured"
    )
    print(format_table(result))
    devices.write_json_atomic(args.out, result)
    print(f"JSON (every pass with its formula): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
