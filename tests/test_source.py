"""Fetching the pinned source: checksum, extraction, the offline cache, --src checkouts."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tqlab.fake_llama import FILES, write_sdist, write_tree
from tqllama import source
from tqllama.cli import cli
from tqllama.errors import TqError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TQLLAMA_CACHE", str(root))
    # Any attempt to download fails at once: these tests must work offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return root


def test_cached_verified_sdist_extracts_only_the_vendored_tree(cache: Path) -> None:
    pin = write_sdist(cache / "sdist" / "llama_cpp_python-0.3.36.tar.gz")
    tree = source.fetch(pin=pin)
    assert tree == cache / "src" / "llama.cpp-0c1e57098"
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert files == sorted(FILES)  # no .git file, nothing from outside vendor/llama.cpp
    assert (tree / "ggml/src/ggml.c").read_text() == FILES["ggml/src/ggml.c"]
    assert (tree / "scripts/run.sh").stat().st_mode & 0o111
    assert not [p for p in tree.parent.iterdir() if p != tree]  # no staging left behind


def test_extracted_tree_is_reused_without_the_sdist(cache: Path) -> None:
    sdist = cache / "sdist" / "llama_cpp_python-0.3.36.tar.gz"
    pin = write_sdist(sdist)
    tree = source.fetch(pin=pin)
    sdist.unlink()
    assert source.fetch(pin=pin) == tree


def test_checksum_mismatch_names_both_hashes_and_the_fix(cache: Path) -> None:
    sdist = cache / "sdist" / "llama_cpp_python-0.3.36.tar.gz"
    pin = write_sdist(sdist)
    wrong = dataclasses.replace(pin, sha256="0" * 64)
    with pytest.raises(TqError) as err:
        source.fetch(pin=wrong)
    message = str(err.value)
    assert "0" * 64 in message and pin.sha256 in message
    assert "delete the file" in message and str(sdist) in message
    assert not (cache / "src" / "llama.cpp-0c1e57098").exists()


def test_no_network_and_no_cache_says_what_to_do(cache: Path) -> None:
    pin = dataclasses.replace(source.PIN, sdist_name="not-cached.tar.gz")
    with pytest.raises(TqError, match=r"could not download llama-cpp-python==0\.3\.36") as err:
        source.fetch(pin=pin)
    assert "--src" in str(err.value)
    assert not list((cache / "sdist").iterdir())  # no partial download left


def test_cli_reports_a_corrupt_sdist_in_one_line(cache: Path) -> None:
    sdist = source.sdist_path()
    sdist.parent.mkdir(parents=True, exist_ok=True)
    sdist.write_bytes(b"not the sdist")
    result = CliRunner().invoke(cli, ["source", "fetch"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tqllama: error: checksum mismatch")
    assert source.PIN.sha256 in lines[0]


def test_src_without_git_is_used_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = write_tree(tmp_path / "llama.cpp")
    assert source.fetch(src=tree) == tree.resolve()
    assert "cannot check the commit" in capsys.readouterr().err


def test_src_with_a_dangling_git_file_is_used_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = write_tree(tmp_path / "llama.cpp")
    (tree / ".git").write_text("gitdir: ../../.git/modules/vendor/llama.cpp\n")
    assert source.fetch(src=tree) == tree.resolve()
    assert "git rev-parse failed" in capsys.readouterr().err


def _commit_all(tree: Path) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tree)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_src_checkout_at_the_pinned_commit_is_accepted(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "llama.cpp")
    head = _commit_all(tree)
    pin = dataclasses.replace(source.PIN, commit=head[:9])
    assert source.fetch(src=tree, pin=pin) == tree.resolve()


def test_src_checkout_at_another_commit_is_refused(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "llama.cpp")
    head = _commit_all(tree)
    with pytest.raises(TqError, match=f"is at commit {head[:12]}.*pinned to 0c1e57098"):
        source.fetch(src=tree)


def test_src_that_is_not_llama_cpp_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TqError, match=r"is not a llama\.cpp source tree"):
        source.fetch(src=tmp_path)
