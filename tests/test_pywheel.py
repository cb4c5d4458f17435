"""The llama-cpp-python wheel's inputs: cmake arguments, cache key, package extraction, the
version stamp, the package patch against the real sdist, and the CLI's option checks.
The wheel itself is built and run in tests/test_python_api.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tqlab.fake_llama import write_sdist
from tqllama import pywheel, source
from tqllama.cli import cli
from tqllama.errors import TqError
from tqllama.patching import Glue, apply_patch
from tqllama.types import CACHE_TYPES


@pytest.fixture
def glue(tmp_path: Path) -> Glue:
    glue = Glue(tmp_path / "ggml-src", tmp_path / "patches")
    glue.ggml_src.mkdir()
    (glue.patches / "python").mkdir(parents=True)
    (glue.patches / "series").write_text("")
    return glue


def test_config_is_the_tools_backend_for_the_libraries_only() -> None:
    config = pywheel.wheel_config("cpu", ["-DGGML_NATIVE=OFF"])
    assert "-DGGML_CUDA=OFF" in config
    assert {"-DLLAMA_BUILD_TOOLS=OFF", "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_COMMON=OFF",
            } <= set(config)
    # the tools' options come first, so these later ones win in cmake
    assert config.index("-DLLAMA_BUILD_SERVER=ON") < config.index("-DLLAMA_BUILD_SERVER=OFF")
    assert not [a for a in config if a.startswith("-DCMAKE_BUILD_TYPE")]
    assert config[-1] == "-DGGML_NATIVE=OFF"
    assert "-DCMAKE_CUDA_ARCHITECTURES=86" in pywheel.wheel_config("cuda", cuda_arch="86")


def test_key_follows_the_package_patch_and_backend(glue: Glue) -> None:
    config = pywheel.wheel_config("cpu")
    before = pywheel.wheel_key(config, "cpu", glue)
    assert pywheel.wheel_key(config, "cpu", glue) == before
    assert pywheel.wheel_key(config, "metal", glue) != before
    assert pywheel.wheel_key(pywheel.wheel_config("cpu", ["-DX=1"]), "cpu", glue) != before
    (glue.patches / "python" / "0001-x.patch").write_text("diff --git a/x b/x\n")
    assert pywheel.wheel_key(config, "cpu", glue) != before
    assert pywheel.package_patches(glue) == [glue.patches / "python" / "0001-x.patch"]


def test_package_extraction_leaves_out_the_vendored_tree_and_git(tmp_path: Path) -> None:
    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    write_sdist(sdist)
    source.extract_package(sdist, tmp_path / "pkg")
    files = [str(p.relative_to(tmp_path / "pkg")) for p in (tmp_path / "pkg").rglob("*")]
    assert files == ["pyproject.toml"]


def test_version_stamp_names_the_key(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text('from .llama import *\n\n__version__ = "0.3.36"\n')
    pywheel._stamp_version(init, "0123456789abcdef")
    assert init.read_text().endswith('__version__ = "0.3.36+tq01234567"\n')
    init.write_text("nothing here\n")
    with pytest.raises(TqError, match="no `__version__"):
        pywheel._stamp_version(init, "0123456789abcdef")


@pytest.mark.slow  # reads the real sdist (downloads it when the cache has none)
def test_package_patch_applies_to_the_pinned_sdist(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    source.extract_package(source.fetch_sdist(), pkg)
    assert not (pkg / "vendor").exists() and not (pkg / ".git").exists()
    patches = pywheel.package_patches(Glue.default())
    assert patches
    for patch in patches:
        assert apply_patch(pkg, patch) == ""
    binding = (pkg / "llama_cpp" / "llama_cpp.py").read_text()
    ids = {m[1].lower(): int(m[2]) for m in re.finditer(r"^GGML_TYPE_(TURBO\dT?) = (\d+)$",
                                                        binding, re.MULTILINE)}
    assert ids == {name: t.ggml_id for name, t in CACHE_TYPES.items()
                   if t.turbo and not name.endswith("_qjl")}


@pytest.mark.parametrize(("args", "message"), [
    (["--wheel-only"], "--wheel-only goes with --python"),
    (["--python", "--tests"], "--tests and --src apply to the tools build"),
])
def test_cli_refuses_options_that_do_not_go_together(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["build", *args])
    assert result.exit_code == 1
    assert message in result.output
