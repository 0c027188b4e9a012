"""The case table the gather and scatter parity tests share: token counts N from the issue's image
sizes, channel counts, mask ratios 0 / 0.75 / 1, with and without pos, fp32 and fp16."""

from __future__ import annotations

import zlib

import torch

GRID_N = {"8x8-P4": 4, "120x120-P8": 225, "64x64-P16": 16}
"""Tokens per modality for the issue's image sizes (8x8 / P4, 120x120 / P8, 64x64 / P16)."""

TOKEN_CASES = [
    (grid, C, ratio, dtype, with_pos)
    for grid in GRID_N
    for C, ratio, with_pos in ((2, 0.0, True), (12, 0.75, True), (12, 1.0, True), (2, 0.75, False))
    for dtype in (torch.float32, torch.float16)
]
"""(grid, channels, mask ratio, dtype, with_pos)."""

TOKEN_CASE_IDS = [f"{g}-C{c}-r{r}-{str(d)[6:]}-pos{int(p)}" for g, c, r, d, p in TOKEN_CASES]


def case_seed(case: object) -> int:
    """A generator seed that depends on the case only (stable across runs and test order)."""
    return zlib.crc32(str(case).encode())
