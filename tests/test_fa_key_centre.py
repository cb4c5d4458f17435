"""The position-aware key centre's term in the CPU flash attention (patch 0020).

The cache stores k - R(p) m and flash attention adds q . R(p) m back to every logit, from
the cells' (cos, sin) table, 256 keys at a time. tests/c/fa_key_centre.c runs the real op
twice on the CPU backend, over K and over K - R(p) m with the term, for cells in any order,
a mask, GQA (6 query heads, 2 KV heads), both RoPE layouts and partial RoPE, with key
counts that leave a partial block; the two outputs must agree to float rounding.
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("neox", "n_rot", "n_kv"), [
    (0, 64, 600), (1, 64, 600), (0, 32, 300), (1, 32, 1000), (0, 64, 255), (1, 64, 256),
])
def test_the_term_puts_back_what_the_cache_took_off(llama_program, neox: int, n_rot: int,
                                                     n_kv: int) -> None:
    run = subprocess.run([str(llama_program("fa_key_centre")), str(neox), str(n_rot), str(n_kv)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    worst = float(run.stdout.split("=")[1].split()[0])
    assert worst <= 1e-4, run.stdout


def test_without_the_term_attention_differs(llama_program) -> None:
    """The check can fail: the centred keys alone (no term) give other outputs."""
    run = subprocess.run([str(llama_program("fa_key_centre")), "0", "64", "600", "--no-term"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr[-2000:]
    assert float(run.stdout.split("=")[1].split()[0]) > 1e-2, run.stdout
