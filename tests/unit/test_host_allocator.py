"""fusmae_fast.host_allocator: after keep_freed_memory a large CPU tensor comes from glibc's heap (no
separate mmap), the opt-out leaves malloc as it is, and every fusmae-fast command applies it first.

The allocator checks run in a fresh interpreter: mallopt changes the whole process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusmae_fast import cli, host_allocator

PROBE = """
import json, torch
from fusmae_fast.host_allocator import keep_freed_memory, mmapped_blocks
before = mmapped_blocks()
t = torch.empty(64 * 2**20, dtype=torch.uint8)  # 64 MiB: above glibc's largest mmap threshold
t.fill_(1)
during_plain = mmapped_blocks() - before
del t
applied = keep_freed_memory()
before = mmapped_blocks()
t = torch.empty(64 * 2**20, dtype=torch.uint8)
t.fill_(1)
print(json.dumps({"applied": applied, "plain": during_plain, "kept": mmapped_blocks() - before}))
"""

needs_glibc = pytest.mark.skipif(
    host_allocator.mmapped_blocks() is None, reason="needs glibc >= 2.33 (mallinfo2) to observe the heap"
)


def _probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_large_tensor_comes_from_the_heap_once_kept():
    res = _probe()
    assert res == {"applied": True, "plain": 1, "kept": 0}


@needs_glibc
def test_opt_out_leaves_malloc_alone():
    res = _probe(**{host_allocator.OPT_OUT_ENV: "system"})
    assert res == {"applied": False, "plain": 1, "kept": 1}


def test_every_command_applies_it_first(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept") or True)
    status = cli.main(["verify", str(tmp_path / "missing")])
    assert status == 2 and calls == ["kept"]
