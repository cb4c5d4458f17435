"""Commands for the pinned source, the patch series, the build and its binaries."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tqllama import build as build_mod
from tqllama import patching, pywheel, source
from tqllama.backends import BACKENDS
from tqllama.errors import TqError

_SRC = click.option("--src", type=click.Path(file_okay=False, path_type=Path),
                    help="Use this llama.cpp checkout (commit "
                    f"{source.PIN.commit}) instead of the pinned sdist.")
_BACKEND = click.option("--backend", type=click.Choice(BACKENDS), default="cpu",
                        show_default=True)


@click.group("source")
def source_group() -> None:
    """The pinned llama.cpp source."""


@source_group.command("fetch")
@_SRC
def fetch(src: Path | None) -> None:
    """Download (or reuse) and verify the pinned source; print the tree's path."""
    click.echo(source.fetch(src))


@click.group("patch")
def patch_group() -> None:
    """The patch series in patches/ (applied after the ggml-src/ overlay)."""


@patch_group.command("check")
@_SRC
def check(src: Path | None) -> None:
    """Report whether each patch of patches/series applies to the pinned tree."""
    reports = patching.check_patches(source.fetch(src))
    if not reports:
        click.echo("patches/series is empty: nothing to check")
    for report in reports:
        click.echo(f"{report.name}: {'applies' if report.applies else 'FAILS: ' + report.reason}")
    failed = [r.name for r in reports if not r.applies]
    if failed:
        raise TqError(f"{len(failed)} of {len(reports)} patches do not apply: "
                      f"{', '.join(failed)}")


@patch_group.command("tree")
@click.argument("directory", type=click.Path(path_type=Path))
@_SRC
def tree(directory: Path, src: Path | None) -> None:
    """Make a patched tree in DIRECTORY to edit: a git repo with one commit per patch."""
    if directory.exists() and any(directory.iterdir()):
        raise TqError(f"{directory} exists and is not empty: export its edits first "
                      f"(`tqllama patch export {directory}`) or remove it")
    if directory.exists():
        directory.rmdir()
    patching.make_tree(source.fetch(src), directory, git_repo=True)
    click.echo(f"{directory}: one commit per patch; edit a patch by editing its commit, then "
               f"run `tqllama patch export {directory}`")


@patch_group.command("export")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def export(directory: Path) -> None:
    """Rewrite patches/ and ggml-src/ from the edited tree in DIRECTORY."""
    report = patching.export_patches(directory)
    for name, files in report.patches.items():
        click.echo(f"patches/{name}: {', '.join(files)}")
    for path in report.ggml_src_written:
        click.echo(f"ggml-src/{path}: written")
    for path in report.ggml_src_removed:
        click.echo(f"ggml-src/{path}: removed")
    for name in report.patches_removed:
        click.echo(f"patches/{name}: removed")


@click.command("build")
@_BACKEND
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Parallel compile jobs "
              "(default: the number of CPUs).")
@click.option("--tests", is_flag=True, help="Also build test-backend-ops and test-quantize-fns.")
@click.option("--cmake-arg", "cmake_args", multiple=True, metavar="ARG",
              help="Extra cmake configure argument (repeatable), e.g. -DGGML_NATIVE=OFF.")
@_SRC
@click.option("--cuda-arch", help=f"CMAKE_CUDA_ARCHITECTURES for --backend cuda "
              f"(default {build_mod.DEFAULT_CUDA_ARCH}).")
@click.option("--python", "python_api", is_flag=True, help="Instead of the tools, build the "
              "llama-cpp-python wheel of the patched tree and install it (cached).")
@click.option("--wheel-only", is_flag=True, help="With --python: print the wheel's path, "
              "do not install it.")
def build(backend: str, jobs: int | None, tests: bool, cmake_args: tuple[str, ...],
          src: Path | None, cuda_arch: str | None, python_api: bool, wheel_only: bool) -> None:
    """Fetch, patch and build llama-server, llama-cli, llama-perplexity and llama-bench
    (with --python: the llama-cpp-python wheel instead)."""
    build_mod.check_platform(backend)
    if wheel_only and not python_api:
        raise TqError("--wheel-only goes with --python: `tqllama build --python --wheel-only`")
    if python_api:
        if tests or src is not None:
            raise TqError("--tests and --src apply to the tools build; --python builds the "
                          "pinned llama-cpp-python sdist: drop them")
        wheel = pywheel.build_wheel(backend=backend, jobs=jobs, cmake_args=cmake_args,
                                    cuda_arch=cuda_arch)
        if wheel_only:
            click.echo(wheel)
        else:
            pywheel.install_wheel(wheel)
            click.echo(f"installed {wheel} into {sys.prefix}")
        return
    manifest = build_mod.build(backend=backend, jobs=jobs, tests=tests, cmake_args=cmake_args,
                               src=src, cuda_arch=cuda_arch)
    click.echo(f"manifest: {build_mod.manifest_path(backend)}")
    for name, path in manifest.binaries.items():
        click.echo(f"{name}: {path}")


@click.command("bin")
@click.argument("name")
@_BACKEND
def bin_(name: str, backend: str) -> None:
    """Print the path of a built tool: `$(tqllama bin llama-server) ...`."""
    click.echo(build_mod.binary_path(name, backend))


@click.command("doctor")
@_BACKEND
def doctor(backend: str) -> None:
    """Check what a build for BACKEND needs: cmake, compilers, git, nvcc, free disk."""
    rows = build_mod.doctor(backend)
    for row in rows:
        mark = "ok" if row.ok else ("MISSING" if row.required else "--")
        click.echo(f"{mark:>7}  {row.check:<14} {row.detail}")
    missing = [row.check for row in rows if row.required and not row.ok]
    if missing:
        raise TqError(f"not ready to build for {backend}: {', '.join(missing)} (see above)")


commands = [source_group, patch_group, build, bin_, doctor]
