"""`tqllama verify`: the JSON contract and the figures' sanity on a small sample."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tqllama.cli import cli


def test_verify_json() -> None:
    result = CliRunner().invoke(cli, ["verify", "--json", "--rows", "2000"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    for name in (
        "turbo2",
        "turbo3",
        "turbo4",
        "turbo4_qjl",
        "q8_0",
        "q4_0",
        "iq4_nl",
        "polar3_d64",
    ):
        r = rows[name]
        assert {"name", "bits_per_value", "mse", "ip_bias", "ip_std"} <= r.keys()
    assert rows["turbo4"]["bits_per_value"] == 4.25
    assert rows["turbo4_qjl"]["bits_per_value"] == 4.5
    assert rows["turbo4"]["mse"] < rows["q4_0"]["mse"] < rows["turbo3"]["mse"]
    assert rows["q8_0"]["mse"] < 1e-4
    # Stage-1 quantizers shrink inner products along x; QJL removes the shrinkage.
    assert rows["turbo3"]["ip_bias"] < -rows["turbo3"]["ip_std"] / 2
    assert abs(rows["turbo4_qjl"]["ip_bias"]) < 0.2 * rows["turbo4_qjl"]["ip_std"]
    assert abs(rows["polar4_d64"]["mse"] - 0.00913) < 0.0005
    # the trellis types at turbo3's and turbo2's bits, under issue 17's bars
    assert rows["turbo3t"]["bits_per_value"] == rows["turbo3"]["bits_per_value"] == 3.25
    assert rows["turbo3t"]["mse"] <= rows["turbo3t"]["bar"] < rows["turbo3"]["mse"]
    assert rows["turbo2t"]["mse"] <= rows["turbo2t"]["bar"] < rows["turbo2"]["mse"]


def test_verify_table_and_bad_rows() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["verify", "--rows", "200"])
    assert result.exit_code == 0 and "turbo4" in result.output and "bar 0.0062" in result.output
    result = runner.invoke(cli, ["verify", "--rows", "1"])
    assert result.exit_code == 1 and "--rows" in result.output
