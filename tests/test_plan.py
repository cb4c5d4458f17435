"""KV sizes against hand-computed llama.cpp allocations, memory fits, parsing and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tqlab.synth import write_metadata, write_model
from tqllama.cli import cli
from tqllama.errors import TqError
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import ModelShape, model_shape
from tqllama.plan import (
    Settings,
    cells,
    kv_size,
    longest_fit,
    make_plan,
    parse_ctx_list,
    parse_memory,
    parse_pair,
    unsupported,
)
from tqllama.planreport import to_json, to_markdown
from tqllama.types import cache_type

F16, Q8_0, Q4_0 = cache_type("f16"), cache_type("q8_0"), cache_type("q4_0")
T4, T3, T2 = cache_type("turbo4"), cache_type("turbo3"), cache_type("turbo2")


def shape(tmp_path: Path, arch: str = "llama", **keys: int | list[int] | list[bool]) -> ModelShape:
    base = {"block_count": 4, "embedding_length": 512, "attention.head_count": 4,
            "attention.head_count_kv": 2, "context_length": 4096}
    return model_shape(read_gguf(write_metadata(tmp_path / "m.gguf", arch, {**base, **keys})))


@pytest.mark.parametrize(("ctype", "bytes_per_row"), [
    # one K row = 2 KV heads x 128 = 256 values
    (F16, 512), (Q8_0, 8 * 34), (Q4_0, 8 * 18), (T4, 4 * 34), (T3, 4 * 26), (T2, 4 * 18),
])
def test_plain_cache_is_layers_times_rows_times_cells(tmp_path: Path, ctype, bytes_per_row) -> None:
    s = shape(tmp_path)
    size = kv_size(s, ctype, ctype, 4096, Settings())
    assert size.k_bytes == size.v_bytes == 4 * bytes_per_row * 4096
    assert size.cells == 4096 and size.swa_cells == 0


def test_mixed_pair_sizes_k_and_v_separately(tmp_path: Path) -> None:
    size = kv_size(shape(tmp_path), T4, T3, 1024, Settings())
    assert (size.k_bytes, size.v_bytes) == (4 * 4 * 34 * 1024, 4 * 4 * 26 * 1024)


def test_protected_layers_size_their_keys_in_q8_0_for_turbo_keys_only(tmp_path: Path) -> None:
    """The automatic protection (tqllama.policy.auto_protected) as plan counts it: the K of
    layer 0 in q8_0 under a turbo K type; a q8_0 or f16 K pair is untouched."""
    s = shape(tmp_path)
    plan = make_plan(s, "m", [1024], [(T4, T4), (Q8_0, T4)], Settings(), None, protected=(0,))
    turbo, q8 = plan.pairs
    assert turbo.protected == (0,) and q8.protected == ()
    assert turbo.sizes[0].k_bytes == (3 * 4 * 34 + 8 * 34) * 1024
    assert turbo.sizes[0].v_bytes == 4 * 4 * 34 * 1024
    assert q8.sizes[0] == kv_size(s, Q8_0, T4, 1024, Settings())
    assert "the K of layer 0 in q8_0" in to_markdown(plan, None)
    assert [p["q8_0_k_layers"] for p in json.loads(to_json(plan))["pairs"]] == [[0], []]


def test_context_is_padded_to_256(tmp_path: Path) -> None:
    assert cells(shape(tmp_path), 1000, Settings()) == (1, 1024, 0)


def test_parallel_sequences_get_a_padded_stream_each(tmp_path: Path) -> None:
    # n_ctx = 1024, n_ctx_seq = pad256(1024 / 3) = 512, three streams
    assert cells(shape(tmp_path), 1000, Settings(n_seq=3)) == (3, 512, 0)
    size = kv_size(shape(tmp_path), F16, F16, 1000, Settings(n_seq=3))
    assert size.k_bytes == 4 * 512 * 512 * 3


def test_unified_cache_is_one_stream(tmp_path: Path) -> None:
    assert cells(shape(tmp_path), 1000, Settings(n_seq=3, unified=True)) == (1, 1024, 0)


def swa_shape(tmp_path: Path) -> ModelShape:
    tmp_path.mkdir(exist_ok=True)
    # layers 0 and 2 slide over 300 tokens, 1 and 3 see everything
    return shape(tmp_path, "gemma3", **{"attention.sliding_window": 300,
                                        "attention.sliding_window_pattern": 2})


def test_sliding_layers_hold_window_plus_ubatch(tmp_path: Path) -> None:
    s = swa_shape(tmp_path)
    # pad256(min(8192, 300 + 512)) = 1024
    assert cells(s, 8192, Settings()) == (1, 8192, 1024)
    size = kv_size(s, F16, F16, 8192, Settings())
    assert size.k_bytes == 2 * 512 * 8192 + 2 * 512 * 1024


def test_sliding_layers_never_exceed_the_context(tmp_path: Path) -> None:
    # ubatch = min(ctx, 512) = 256: pad256(min(256, 300 + 256)) = 256
    assert cells(swa_shape(tmp_path), 256, Settings()) == (1, 256, 256)


def test_unified_window_scales_with_sequences(tmp_path: Path) -> None:
    # pad256(min(8192, 300 * 4 + 512)) = 1792
    assert cells(swa_shape(tmp_path), 8192, Settings(n_seq=4, unified=True)) == (1, 8192, 1792)
    # separate streams: n_ctx_seq = 2048, window per stream pad256(300 + 512)
    assert cells(swa_shape(tmp_path), 8192, Settings(n_seq=4)) == (4, 2048, 1024)


def test_swa_full_and_ubatch(tmp_path: Path) -> None:
    assert cells(swa_shape(tmp_path), 8192, Settings(swa_full=True)) == (1, 8192, 8192)
    assert cells(swa_shape(tmp_path), 8192, Settings(n_ubatch=2048)) == (1, 8192, 2560)


def test_uncached_layers_cost_nothing(tmp_path: Path) -> None:
    s = shape(tmp_path, "glm4moe", nextn_predict_layers=1)
    assert kv_size(s, F16, F16, 256, Settings()).k_bytes == 3 * 512 * 256


def test_mla_has_no_v_and_needs_equal_types(tmp_path: Path) -> None:
    s = shape(tmp_path, "deepseek2", **{"attention.head_count_kv": 1,
                                        "attention.key_length": 576,
                                        "attention.value_length": 512,
                                        "attention.key_length_mla": 192,
                                        "attention.value_length_mla": 128})
    size = kv_size(s, T4, T4, 256, Settings())
    assert (size.k_bytes, size.v_bytes) == (4 * 9 * 34 * 256, 0)
    assert unsupported(s, T4, T4) is None
    assert "same K and V type" in str(unsupported(s, T4, T3))


@pytest.mark.parametrize(("head", "refused"), [
    (64, []), (128, []), (256, []),
    (96, ["turbo4", "turbo3", "turbo2"]),
    (80, ["q8_0", "q4_0", "turbo4", "turbo3", "turbo2"]),
])
def test_head_sizes_the_block_does_not_divide(tmp_path: Path, head: int, refused) -> None:
    s = shape(tmp_path, **{"attention.key_length": head, "attention.value_length": head})
    got = [t.name for t in (F16, Q8_0, Q4_0, T4, T3, T2) if unsupported(s, t, t)]
    assert got == refused
    if refused:
        assert f"head size {head} is not a multiple of" in str(unsupported(s, T4, T4))


def test_longest_fit_is_the_last_context_that_fits(tmp_path: Path) -> None:
    plain = shape(tmp_path)
    swa = swa_shape(tmp_path / "swa")
    for s, st in ((plain, Settings()), (plain, Settings(n_seq=3)), (swa, Settings())):
        budget = s.weight_bytes + 10_000_000
        best = longest_fit(s, Q8_0, T3, budget, st)
        step = 256 * st.n_seq
        assert best > 0 and best % step == 0
        assert kv_size(s, Q8_0, T3, best, st).total_bytes <= budget
        assert kv_size(s, Q8_0, T3, best + step, st).total_bytes > budget
    assert longest_fit(plain, F16, F16, 1000, Settings()) == 0


@pytest.mark.parametrize(("text", "value"), [
    ("36GB", 36 * 10**9), ("36 GiB", 36 << 30), ("36G", 36 << 30), ("1.5TB", 15 * 10**11),
    ("512MiB", 512 << 20), ("123456", 123456), ("8gb", 8 * 10**9),
])
def test_parse_memory(text: str, value: int) -> None:
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "GB", "36XB", "0GB", "-1GB", "36 G B", "1e9"])
def test_parse_memory_refuses(text: str) -> None:
    with pytest.raises(TqError, match="memory size"):
        parse_memory(text)


def test_parse_pair_and_ctx() -> None:
    assert parse_pair("q8_0/turbo3") == (Q8_0, T3)
    assert parse_pair("turbo2") == (T2, T2)
    assert parse_ctx_list("4096, 32k,128K") == [4096, 32768, 131072]
    with pytest.raises(TqError, match="unknown KV-cache type"):
        parse_pair("q9/q9")
    with pytest.raises(TqError, match="cache pair"):
        parse_pair("f16/f16/f16")
    with pytest.raises(TqError, match="context size"):
        parse_ctx_list("4096,,8192")


def test_parse_pair_is_the_sweeps_grammar() -> None:
    assert parse_pair(" turbo4/turbo3 ") == (T4, T3)
    with pytest.raises(TqError, match="K/V@bN"):
        parse_pair("turbo2/turbo2@b")
    with pytest.raises(TqError, match="pass turbo2/turbo2 instead of turbo2/turbo2@b2:f16/f16"):
        parse_pair("turbo2/turbo2@b2:f16/f16")


def run_plan(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["plan", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_markdown_and_json(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.gguf", n_embd=256, n_head=2, n_head_kv=1, head_dim=128)
    code, out, _ = run_plan(str(model), "--ctx", "512,4096", "--memory", "64MiB")
    assert code == 0
    # 2 layers x 128 wide x 4096 cells x 2 bytes, K and V: 4 MiB
    assert "| f16/f16 | 0.50 | 4.00 |" in out
    assert "| turbo4/turbo3 |" in out and "longest -c in 64MiB" in out
    code, out, _ = run_plan(str(model), "--ctx", "4096", "--cache", "q8_0/turbo3",
                            "--format", "json")
    doc = json.loads(out)
    (pair,) = doc["pairs"]
    assert (pair["k"], pair["v"], pair["unsupported"]) == ("q8_0", "turbo3", None)
    assert pair["sizes"][0]["k_bytes"] == 2 * 4 * 34 * 4096
    assert pair["sizes"][0]["v_bytes"] == 2 * 2 * 26 * 4096
    assert doc["weight_bytes"] == read_gguf(model).weight_bytes


def test_cli_flags_unsupported_heads(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.gguf", n_embd=320, n_head=4, head_dim=80)
    code, out, _ = run_plan(str(model), "--ctx", "1024")
    assert code == 0
    assert "| turbo3/turbo3 | unsupported |" in out
    assert "K head size 80 is not a multiple of turbo3's block of 64" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--memory", "lots"], "cannot read memory size 'lots'"),
    (["--cache", "f16/q7"], "unknown KV-cache type 'q7'"),
    (["--ctx", "big"], "cannot read context size 'big'"),
    (["--parallel", "0"], "llama.cpp takes 1 to 256 sequences"),
    (["--ubatch", "0"], "--ubatch 0 is not positive"),
])
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    model = write_model(tmp_path / "m.gguf")
    code, out, err = run_plan(str(model), *args)
    assert code == 1 and out == ""
    assert err.startswith("tqllama: error: ") and message in err and err.count("\n") == 1


def test_cli_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    code, _, err = run_plan(str(path))
    assert code == 1 and "not a GGUF file" in err


def test_a_cache_policy_is_sized_layer_by_layer(tmp_path: Path) -> None:
    """`--cache-policy FILE`: each layer with its own K and V types, as llama.cpp allocates
    them; a policy made for another model is refused in one line."""
    from tqllama.policy import Policy, model_id

    path = write_model(tmp_path / "m.gguf", n_layer=4, n_head=4, n_head_kv=2, head_dim=64)
    gguf = read_gguf(path)
    policy = Policy(model_id(gguf), ("q8_0", "turbo4", "turbo4", "q8_0"), ("turbo3",) * 4)
    policy.write(tmp_path / "p.policy")
    result = CliRunner().invoke(cli, ["plan", str(path), "--cache", "turbo4/turbo3", "--ctx",
                                      "1024", "--cache-policy", str(tmp_path / "p.policy"),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["pairs"]
    width = 2 * 64  # K or V values of one layer and cell
    q8, t4, t3 = width // 32 * 34, width // 64 * 34, width // 64 * 26
    assert rows[0]["sizes"][0]["k_bytes"] == 4 * t4 * 1024
    assert rows[1]["policy"] == "p.policy"
    assert rows[1]["sizes"][0]["k_bytes"] == (2 * q8 + 2 * t4) * 1024
    assert rows[1]["sizes"][0]["v_bytes"] == 4 * t3 * 1024
    other = Policy("llama:4:256:2:64:9:another", policy.k, policy.v)
    other.write(tmp_path / "o.policy")
    bad = CliRunner().invoke(cli, ["plan", str(path), "--cache-policy",
                                   str(tmp_path / "o.policy")])
    assert bad.exit_code == 1
    assert "was made for the model 'llama:4:256:2:64:9:another'" in bad.output
