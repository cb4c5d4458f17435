"""What a turbo cache adds to llama.cpp's compute graph, a few nodes per layer and tensor.

On a GPU every node that is not a view is at least one kernel launch, and a decode step of
a small model is mostly launches: each node a cache type adds per layer costs every token.
Upstream's rotated q8_0 adds 12 nodes per layer over f16 (Q, K, V and the attention output
each reshaped, multiplied by the Hadamard matrix, reshaped back). The turbo rotation
R = D H D is the same single multiplication (GGML_HINT_SRC0_IS_SIGNED_HADAMARD: the signs
ride in the matrix), and a turbo V costs nothing more. A turbo K pays for its centre:
- the constant centre (what a GPU build runs, and TQLLAMA_TURBO_CENTER=span): one
  subtraction per layer; the ubatch that sets the centre (the first one of at least 32
  tokens written into an empty cache) computes the mean as well: 6 more nodes per layer,
  once per filling of the cache;
- the position-aware centre (the CPU's default): m repeated over the ubatch, turned to each
  position and subtracted, four views for flash attention (the cells' phases, the
  un-rotated queries, the first keys' F32 rows and the cells' slots, patch 0025), and the
  key scales (patch 0026: the keys times s, a view and a multiplication; the queries times
  1/s, a view, two reshapes and a multiplication): 13 nodes per layer, 5 of them computing;
  the ubatch that sets the centre turns its keys back and averages them (8 more per layer),
  estimates the scales (one CPU op and its copy: 2 more) and, as every ubatch that holds a
  sequence's first token, copies those keys to their F32 rows (two input views, two
  reshapes, get_rows and set_rows: 6 more).
- a turbo V beside the position-aware centre keeps the first values in the same rows
  (patch 0029): a ubatch with first tokens copies them beside the keys (reshape, get_rows,
  concat: 3 nodes per layer). The value centre (0030, TQLLAMA_TURBO_VCENTER=1, not the
  default) would add 5 per layer to every graph and 5 to the first.
A mix of types (boundary layers, a cache policy) costs nothing for the mix; a turbo K
cache centres its q8_0 layers' keys too (patch 0023), so every layer of it pays the centre.

tests/c/graph_nodes.c counts the nodes of real graphs (eval callback) and the graphs reused,
for prompt ubatches and single-token decodes. Measured on SmolLM2 (30 layers): decode
f16 936, q8_0 1296, turbo4/turbo4 1326 (constant centre) and 1686 (position-aware),
q8_0/turbo4 1296; the first prompt of turbo4 1506 and 2256.
Before this design (357c062) llama-perplexity reported 1356 nodes for q8_0 and 2196 for
turbo4 (+28 per layer).
"""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.slow

N_LAYER = 30  # SmolLM2-135M
TURBO = ("turbo2", "turbo3", "turbo4", "turbo2_qjl", "turbo3_qjl", "turbo4_qjl")
PAIRS = ("f16/f16", "q8_0/q8_0", "q4_0/q4_0", "turbo4/turbo4", "q8_0/turbo4", "turbo4/turbo3",
         "turbo4_qjl/q8_0", "turbo4/turbo4@b2", "turbo4/turbo4@p3")
# per centred layer: the nodes of its centre in every graph, and the more in the ubatch that
# sets it (constant: permute, cont, mean, reshape, map multiply, copy to the centre;
# position-aware: two input views, turn back, permute, cont, mean, reshape, copy, the
# scales' op and copy, and the six that copy the first keys)
CENTRE_NODES = {"span": (1, 6), "position": (13, 16)}
# per layer with a turbo V beside the position-aware centre: none in every graph, and the
# more in the first ubatch (the first values copied)
VALUE_NODES = {"span": (0, 0), "position": (0, 3)}


@pytest.fixture(scope="module", params=list(CENTRE_NODES))
def centre(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def graphs(llama_program, model, centre: str) -> dict[str, dict[str, int]]:
    env = {k: v for k, v in os.environ.items() if k != "TQLLAMA_TURBO_CENTER"}
    if centre == "span":
        env["TQLLAMA_TURBO_CENTER"] = "span"
    run = subprocess.run([str(llama_program("graph_nodes")), str(model), *PAIRS],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {}
    for line in run.stdout.splitlines():
        pair, first, prompt, decode, reused = line.split()
        rows[pair] = {"first": int(first), "prompt": int(prompt), "decode": int(decode),
                      "reused": int(reused)}
    assert set(rows) == set(PAIRS), run.stdout
    return rows


def _centred_layers(pair: str) -> int:
    """Layers whose keys are centred: all of a turbo K cache, its q8_0 layers too (K/V@bN:
    N q8_0 layers at each end; K/V@pN: a cache policy with the K of every N-th layer in
    q8_0); none of any other."""
    k = pair.partition("@")[0].split("/")[0]
    return N_LAYER if k in TURBO else 0


def _value_layers(pair: str) -> int:
    """Layers with a turbo V beside a turbo K's centre: all of them, less the q8_0 boundary
    layers of K/V@bN (a policy's q8_0 K layers keep their centre, and their turbo V)."""
    types, _, at = pair.partition("@")
    k, v = types.split("/")
    if k not in TURBO or v not in TURBO:
        return 0
    return N_LAYER - 2 * int(at[1:]) if at.startswith("b") else N_LAYER


def _turbo(pair: str) -> bool:
    return any(t in TURBO for t in pair.partition("@")[0].split("/"))


@pytest.mark.parametrize("pair", [p for p in PAIRS if _turbo(p)])
@pytest.mark.parametrize("graph", ["prompt", "decode"])
def test_turbo_costs_its_key_centre_over_q8_0(graphs, centre: str, pair: str,
                                              graph: str) -> None:
    # exactly the centre's nodes per centred layer, and the value centre's per turbo V layer
    assert graphs[pair][graph] == (graphs["q8_0/q8_0"][graph]
                                   + CENTRE_NODES[centre][0] * _centred_layers(pair)
                                   + VALUE_NODES[centre][0] * _value_layers(pair))


def test_q8_0_is_upstreams_rotation_over_f16(graphs) -> None:
    # Q, K, V and the output: reshape, multiply, reshape each
    assert graphs["q8_0/q8_0"]["decode"] == graphs["f16/f16"]["decode"] + 12 * N_LAYER
    assert graphs["q4_0/q4_0"] == graphs["q8_0/q8_0"]


@pytest.mark.parametrize("pair", PAIRS)
def test_only_the_ubatch_that_sets_the_key_centre_is_larger(graphs, centre: str,
                                                            pair: str) -> None:
    row = graphs[pair]
    assert row["first"] == (row["prompt"] + CENTRE_NODES[centre][1] * _centred_layers(pair)
                            + VALUE_NODES[centre][1] * _value_layers(pair))


@pytest.mark.parametrize("pair", PAIRS)
def test_decode_graphs_are_reused_as_for_q8_0(graphs, pair: str) -> None:
    # after the first decode every step reuses its graph (what lets CUDA graphs replay it)
    assert graphs[pair]["reused"] == graphs["q8_0/q8_0"]["reused"] == 7
