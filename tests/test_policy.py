"""Cache policy files (tqllama.policy) and the choice of `tqllama tune` (tqllama.tune.choose),
without llama.cpp: the file format and its one-line errors, the model's id, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from tqlab.policies import SMOLLM2_ID
from tqllama import assets
from tqllama.errors import TqError
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import model_shape
from tqllama.policy import Policy, model_id, read
from tqllama.tune import (
    Sensitivity,
    budget_bits,
    choose,
    load_measurements,
    measurements_path,
    relative_mse,
)


@pytest.fixture(scope="module")
def smollm2():
    return read_gguf(assets.fetch_model("smollm2-135m"))


def test_model_id_is_what_llama_cpp_says(smollm2) -> None:
    # llama_model_cache_policy_id: arch, n_layer, n_embd, n_head_kv, head size, vocab, name
    assert model_id(smollm2) == SMOLLM2_ID


def test_a_policy_round_trips_and_counts_its_bits(tmp_path: Path, smollm2) -> None:
    k = ("q8_0",) + ("turbo4",) * 28 + ("q8_0",)
    v = ("turbo3",) * 30
    policy = Policy(SMOLLM2_ID, k, v)
    path = tmp_path / "p.policy"
    policy.write(path, comments=["made for a test"])
    text = path.read_text()
    assert text.startswith("# made for a test\n")
    assert text.splitlines()[1:3] == ["tqllama-cache-policy 1", f"model {SMOLLM2_ID}"]
    assert text.splitlines()[-1] == "end" and "layer 29 q8_0 turbo3" in text
    assert read(path) == policy
    shape = model_shape(smollm2)
    assert policy.bits_per_value(shape) == pytest.approx((2 * 8.5 + 28 * 4.25 + 30 * 3.25) / 60)
    policy.check_model(smollm2, path)


def _broken(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.policy"
    path.write_text(text)
    with pytest.raises(TqError) as err:
        read(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "tqllama tune" in message
    return message


GOOD = (f"tqllama-cache-policy 1\nmodel {SMOLLM2_ID}\nlayer 0 q8_0 turbo4\n"
        "layer 1 turbo4 turbo4\nend\n")


@pytest.mark.parametrize(("text", "what"), [
    (GOOD.replace("end\n", ""), "ends early"),
    (GOOD.replace("layer 1 turbo4", "layer 1 turbo9"), "line 4: unknown cache type 'turbo9'"),
    (GOOD.replace("layer 1", "layer 2"), "line 4: layer 2 where layer 1 was due"),
    (GOOD.replace("tqllama-cache-policy 1", "tqllama-cache-policy 2"), "line 1: not a tqllama"),
    (GOOD + "layer 2 q8_0 q8_0\n", "line 6: text after 'end'"),
    (GOOD.replace("layer 0 q8_0 turbo4", "layer 0 q8_0"), "line 3: a layer line is"),
    (GOOD.replace(f"model {SMOLLM2_ID}\n", ""), "names no model"),
    ("", "ends early"),
])
def test_a_broken_policy_is_one_line(tmp_path: Path, text: str, what: str) -> None:
    assert what in _broken(tmp_path, text)


def test_a_policy_for_another_model_is_refused(tmp_path: Path, smollm2) -> None:
    other = Policy("qwen2:24:896:2:64:151936:Qwen2.5 Coder 0.5B Instruct AWQ", ("q8_0",) * 24,
                   ("q8_0",) * 24)
    with pytest.raises(TqError, match="was made for the model 'qwen2:24") as err:
        other.check_model(smollm2, tmp_path / "q.policy")
    assert SMOLLM2_ID in str(err.value)


def test_relative_mse_orders_the_types() -> None:
    assert relative_mse("f16") == 0.0
    assert relative_mse("q8_0") < relative_mse("turbo4") < relative_mse("q4_0")
    assert relative_mse("turbo4") < relative_mse("turbo3") < relative_mse("turbo2")
    # the trellis types sit between their scalar twins and the next bit
    assert relative_mse("turbo4") < relative_mse("turbo3t") < relative_mse("turbo3")
    assert relative_mse("turbo3") < relative_mse("turbo2t") < relative_mse("turbo2")
    assert 0.0055 < relative_mse("turbo4") < 0.0065  # docs/REFERENCE.md: 0.00593
    # turbo5: a quarter of turbo4's error for one bit more, below q5_0's at 5.5 bits
    assert relative_mse("q8_0") < relative_mse("turbo5") < relative_mse("q5_0")
    assert relative_mse("turbo5") < relative_mse("turbo4") / 3.5


def test_relative_mse_of_a_type_without_reference_names_the_choices() -> None:
    with pytest.raises(TqError) as err:
        relative_mse("turbo4_qjl")
    msg = str(err.value)
    assert "tune cannot predict turbo4_qjl's error" in msg
    assert "turbo3t" in msg and "q5_0" in msg and "iq4_nl_kv" not in msg


def _sens(n: int) -> list[Sensitivity]:
    """Layer 0's K is 50x as sensitive as the rest; V a tenth of K."""
    return [Sensitivity(il, 0.05 if il == 0 else 0.001, 0.0001) for il in range(n)]


def test_choose_protects_the_sensitive_cache_within_the_budget(smollm2) -> None:
    shape = model_shape(smollm2)
    types = ("q8_0", "turbo4", "turbo3")
    choice = choose(_sens(30), shape, types, budget=4.25)
    assert choice.bits <= 4.25 + 1e-9
    assert choice.layers[0].k == "q8_0"  # worth 4.25 bits more than anything else
    # the K caches, 10x as sensitive as the V caches, get their bits first
    assert all(c.k != "turbo3" for c in choice.layers)
    assert any(c.v == "turbo3" for c in choice.layers)
    richer = choose(_sens(30), shape, types, budget=5.0)
    assert richer.expected_kld < choice.expected_kld and richer.bits <= 5.0 + 1e-9
    floor = choose(_sens(30), shape, types, budget=3.25)
    assert {c.k for c in floor.layers} == {c.v for c in floor.layers} == {"turbo3"}


def test_a_bit_goes_to_turbo5_before_four_go_to_q8_0(smollm2) -> None:
    """Every cache alike: turbo5 removes three quarters of turbo4's loss for one bit, q8_0
    nearly all of it for 4.25, so a budget of one bit more than turbo4 buys turbo5 everywhere."""
    shape = model_shape(smollm2)
    sens = [Sensitivity(il, 0.001, 0.001) for il in range(30)]
    choice = choose(sens, shape, ("q8_0", "turbo5", "turbo4"), budget=5.25)
    assert {c.k for c in choice.layers} == {c.v for c in choice.layers} == {"turbo5"}
    without = choose(sens, shape, ("q8_0", "turbo4"), budget=5.25)
    assert choice.expected_kld < 0.5 * without.expected_kld


def test_keys_take_a_non_turbo_type_only_where_measured_cheap(smollm2) -> None:
    """tune measures q5_0 keys (k_plain) instead of predicting them from the turbo probe,
    and a layer whose q5_0 keys cost much keeps turbo or q8_0."""
    shape = model_shape(smollm2)
    types = ("q8_0", "q5_0", "turbo4", "turbo3")

    def k_types(k_plain: float | None) -> set[str]:
        sens = [Sensitivity(il, 0.004, 0.001, k_plain) for il in range(30)]
        return {c.k for c in choose(sens, shape, types, budget=4.6).layers}

    # k_plain is the KLD of q5_0 keys: a third of turbo4's is what its error predicts
    assert "q5_0" in k_types(0.0012)
    assert "q5_0" not in k_types(0.004)  # no better than turbo4 keys at 1.25 bits more
    assert "q5_0" not in k_types(1.0)  # keys that break the model
    assert "q5_0" not in k_types(None)  # not measured: not predicted either
    assert "q5_0" in {c.v for c in choose([Sensitivity(il, 0.004, 0.001) for il in range(30)],
                                          shape, types, budget=4.6).layers}


def test_a_budget_below_the_smallest_type_is_one_line(smollm2) -> None:
    with pytest.raises(TqError, match=r"below the smallest type of --types \(turbo3, 3\.25 bits"):
        choose(_sens(30), model_shape(smollm2), ("q8_0", "turbo3"), budget=3.0)
    with pytest.raises(TqError, match="unknown cache type turbo9"):
        choose(_sens(30), model_shape(smollm2), ("turbo9",), budget=4.0)


def test_budget_from_memory(smollm2) -> None:
    shape = model_shape(smollm2)
    # a turbo4 cache of 512 cells: 30 layers x 2 x 192 values x 512 cells x 4.25 bits
    turbo4 = 30 * 2 * 192 * 512 * 34 // 64
    assert budget_bits(shape, turbo4, 512) == pytest.approx(4.25)


def test_kept_measurements_are_keyed_and_a_damaged_file_is_measured_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQLLAMA_CACHE", str(tmp_path / "cache"))
    tool, model, text = (tmp_path / name for name in ("llama-perplexity", "m.gguf", "t.txt"))
    for path in (tool, model, text):
        path.write_text(path.name)
    first = measurements_path(tool, model, text, 512, 1, "turbo4")
    assert first.parent == tmp_path / "cache" / "tune"
    assert measurements_path(tool, model, text, 512, 1, "turbo4") == first
    assert measurements_path(tool, model, text, 512, 2, "turbo4") != first
    text.write_text("other text")
    assert measurements_path(tool, model, text, 512, 1, "turbo4") != first
    first.parent.mkdir(parents=True)
    first.write_text('[[0, 0.5, 0.25], [1, 0.125, 0.0625]]\n')
    assert load_measurements(first) == [Sensitivity(0, 0.5, 0.25), Sensitivity(1, 0.125, 0.0625)]
    first.write_text('[[0, 0.5')
    assert load_measurements(first) is None
