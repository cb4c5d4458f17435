"""Turn the pristine pinned tree into the TurboQuant tree, and patches back from an edit.

A patched tree is: the pristine tree, then every file of `ggml-src/` copied over it at the
same relative path, then the patches of `patches/series` applied in order.

Patches are applied with `git apply` rather than `patch -p1`: git apply checks every hunk
of a patch before it writes anything (a patch applies whole or not at all), it refuses to
apply with fuzz (a hunk that lands a few lines off in a C switch is a silent bug), it
understands the new-file and mode lines `git diff` writes, and it runs outside a
repository. It reports a failure as `patch failed: FILE:LINE`, which names the hunk.

Every tree is built in a staging directory beside its destination and renamed into place
only when complete, so a failure never leaves a half-patched tree behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from tqllama import paths
from tqllama.errors import TqError
from tqllama.source import PIN, tree_files

# One patch per area of the tree, first matching rule wins. A pattern ending in "/" is a
# directory prefix; any other pattern is a glob whose "*" stays within one path component.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("0001-ggml-core", ("ggml/include/", "ggml/src/*.c", "ggml/src/*.h", "ggml/src/*.cpp",
                        "ggml/src/CMakeLists.txt")),
    ("0002-ggml-cpu", ("ggml/src/ggml-cpu/",)),
    ("0003-llama", ("src/", "include/")),
    ("0004-tools", ("common/", "tools/")),
    ("0005-tests", ("tests/",)),
    ("0006-cuda", ("ggml/src/ggml-cuda/", "ggml/cmake/", "ggml/CMakeLists.txt")),
    ("0007-metal", ("ggml/src/ggml-metal/",)),
)
OTHER_AREA = "0099-other"

SERIES_HEADER = (
    "# Applied in order after ggml-src/ is laid over the pinned tree.\n"
    "# Written by `tqllama patch export`: one patch per area (AREAS in tqllama/patching.py).\n"
)

# Written into the .git directory of a tree made by `tqllama patch tree`.
_TREE_MARKER = "tqllama-tree.json"
# Fixed identity and settings, so that a user's git configuration cannot change the
# commit or the diff text (prefixes, colour, external diff tools, renames).
_GIT_CONFIG = (
    "-c", "user.name=tqllama", "-c", "user.email=tqllama@localhost",
    "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", "-c", "core.quotePath=false",
    "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.relative=false", "-c", "diff.external=",
)


@dataclass(frozen=True)
class Glue:
    """The project's changes to the pinned tree: whole files and the patch series."""

    ggml_src: Path
    patches: Path

    @classmethod
    def default(cls) -> Glue:
        return cls(paths.ggml_src_dir(), paths.patches_dir())

    def overlay_files(self) -> list[PurePosixPath]:
        return list(tree_files(self.ggml_src))

    def series_names(self) -> list[str]:
        """The names in patches/series, in order; a missing file is an empty series."""
        series = self.patches / "series"
        if not series.is_file():
            return []
        names = (line.split("#", 1)[0].strip() for line in series.read_text().splitlines())
        return [name for name in names if name]

    def series(self) -> list[Path]:
        """The patch files of the series, in order; each must exist."""
        result = []
        for name in self.series_names():
            patch = self.patches / name
            if not patch.is_file():
                raise TqError(f"{self.patches / 'series'} lists {name}, which does not exist "
                              f"in {self.patches}: add the file or remove the line")
            result.append(patch)
        return result


@dataclass(frozen=True)
class PatchReport:
    name: str
    applies: bool
    reason: str = ""


@dataclass
class ExportReport:
    patches: dict[str, list[str]] = field(default_factory=dict)
    ggml_src_written: list[str] = field(default_factory=list)
    ggml_src_removed: list[str] = field(default_factory=list)
    patches_removed: list[str] = field(default_factory=list)


def make_tree(pristine: Path, dest: Path, glue: Glue | None = None, *,
              git_repo: bool = False) -> None:
    """Build the patched tree at `dest`, replacing what is there only on success.

    With `git_repo`, `dest` is also a git repository whose first commit is the pristine
    tree plus the ggml-src overlay, with the patches left uncommitted: `git diff` there
    shows exactly the glue, and `export_patches` turns an edited tree back into patches.
    """
    glue = glue or Glue.default()
    series = glue.series()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as scratch:
        staging = Path(scratch) / "tree"
        overlay = _prepare(pristine, staging, glue)
        if git_repo:
            _git(staging, "init", "-q")
            _git(staging, "add", "-A", "-f", ".")
            _git(staging, "commit", "-q", "--no-verify", "-m",
                 f"llama.cpp {PIN.commit} (pristine) + ggml-src overlay")
            base = _git(staging, "rev-parse", "HEAD").stdout.decode().strip()
            marker = {"pin": PIN.commit, "base": base, "overlay": [str(p) for p in overlay]}
            (staging / ".git" / _TREE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        for patch in series:
            failure = apply_patch(staging, patch)
            if failure:
                raise TqError(f"patch {patch.name} does not apply: {failure}; nothing was "
                              "changed. Update the patch for the pinned tree "
                              "(`tqllama patch check` reports every patch)")
        _replace_dir(staging, dest)


def check_patches(pristine: Path, glue: Glue | None = None) -> list[PatchReport]:
    """Try every patch of the series in order on a scratch tree; report each.

    A patch that fails is skipped and the later ones are still tried, so one report
    shows every patch that needs work.
    """
    glue = glue or Glue.default()
    series = glue.series()
    reports = []
    with tempfile.TemporaryDirectory(prefix="tqllama-check-") as scratch:
        staging = Path(scratch) / "tree"
        _prepare(pristine, staging, glue)
        for patch in series:
            failure = apply_patch(staging, patch)
            reports.append(PatchReport(patch.name, not failure, failure))
    return reports


def export_patches(tree: Path, glue: Glue | None = None) -> ExportReport:
    """Rewrite patches/ and ggml-src/ from a tree made by `make_tree(git_repo=True)`.

    New files and files of the overlay go (back) to ggml-src/; every other change becomes
    a hunk in the patch of its area. Exporting an unchanged tree writes identical bytes.
    """
    glue = glue or Glue.default()
    marker_path = tree / ".git" / _TREE_MARKER
    if not marker_path.is_file():
        raise TqError(f"{tree} was not made by `tqllama patch tree`; make one with "
                      "`tqllama patch tree DIR`, edit it there, then export it")
    marker = json.loads(marker_path.read_text())
    base, overlay = marker["base"], set(marker["overlay"])
    old_series = glue.series_names()

    status = _git(tree, "diff", "--name-status", "--no-renames", "-z", base).stdout
    fields = status.decode().split("\0")[:-1]  # "KIND\0PATH\0" pairs
    changes = dict(zip(fields[1::2], fields[0::2], strict=True))  # path -> A/M/D/T
    untracked = _git(tree, "ls-files", "--others", "--exclude-standard", "-z").stdout
    for path in untracked.decode().split("\0"):
        if path:
            changes[path] = "A"

    report = ExportReport()
    by_area: dict[str, list[str]] = {}
    for path, kind in sorted(changes.items()):
        if path in overlay or kind == "A":
            target = glue.ggml_src / path
            if kind == "D":
                target.unlink(missing_ok=True)
                report.ggml_src_removed.append(path)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tree / path, target)
                report.ggml_src_written.append(path)
        else:
            by_area.setdefault(area_of(path), []).append(path)

    glue.patches.mkdir(parents=True, exist_ok=True)
    new_names = []
    for area in sorted(by_area):
        name = f"{area}.patch"
        (glue.patches / name).write_bytes(_diff(tree, base, by_area[area]))
        report.patches[name] = by_area[area]
        new_names.append(name)
    stale = set(old_series) | {f"{area}.patch" for area, _ in AREAS} | {f"{OTHER_AREA}.patch"}
    for name in sorted(stale - set(new_names)):
        if (glue.patches / name).is_file():
            (glue.patches / name).unlink()
            report.patches_removed.append(name)
    (glue.patches / "series").write_text(SERIES_HEADER + "".join(f"{n}\n" for n in new_names))
    return report


def area_of(path: str) -> str:
    parts = PurePosixPath(path).parts
    for area, patterns in AREAS:
        for pattern in patterns:
            if pattern.endswith("/"):
                if path.startswith(pattern):
                    return area
            else:
                pattern_parts = PurePosixPath(pattern).parts
                if len(parts) == len(pattern_parts) and all(
                    fnmatchcase(p, q) for p, q in zip(parts, pattern_parts, strict=True)
                ):
                    return area
    return OTHER_AREA


def _prepare(pristine: Path, staging: Path, glue: Glue) -> list[PurePosixPath]:
    """Copy the pristine tree to `staging` and lay ggml-src over it; return the overlay."""
    for rel in tree_files(pristine):
        _copy(pristine / rel, staging / rel)
    overlay = glue.overlay_files()
    for rel in overlay:
        target = staging / rel
        if target.is_symlink() or target.is_file():
            target.unlink()  # copy2 would write through a symlink of the pristine tree
        _copy(glue.ggml_src / rel, target)
    return overlay


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=False)


def apply_patch(tree: Path, patch: Path) -> str:
    """Apply one patch to `tree`; return "" on success, else why it failed."""
    proc = _git(tree, "apply", "--whitespace=nowarn", str(patch.resolve()), check=False)
    if proc.returncode == 0:
        return ""
    return _explain_failure(proc.stderr.decode(errors="replace"), patch)


def _explain_failure(stderr: str, patch: Path) -> str:
    hunks = _hunk_starts(patch)
    reasons = []
    for line in stderr.splitlines():
        if not line.startswith("error: ") or line == "error: while searching for:":
            continue
        message = line[len("error: "):]
        failed = re.fullmatch(r"patch failed: (.+):(\d+)", message)
        if failed:
            file, start = failed[1], int(failed[2])
            number = hunks.get((file, start))
            hunk = f"hunk #{number} " if number else "a hunk "
            reasons.append(f"{hunk}of {file} does not match the tree at {file}:{start}")
        elif not message.endswith(": patch does not apply"):
            reasons.append(message)
    return "; ".join(reasons) or stderr.strip().replace("\n", " ")


def _hunk_starts(patch: Path) -> dict[tuple[str, int], int]:
    """(file, old start line) -> hunk number within that file, as git apply reports."""
    starts: dict[tuple[str, int], int] = {}
    file, number = "", 0
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("--- "):
            old = line[4:].split("\t")[0]
            file, number = (old[2:] if old.startswith("a/") else old), 0
        elif line.startswith("+++ ") and file == "/dev/null":
            new = line[4:].split("\t")[0]
            file = new[2:] if new.startswith("b/") else new
        elif match := re.match(r"@@ -(\d+)", line):
            number += 1
            starts.setdefault((file, int(match[1])), number)
    return starts


def _diff(tree: Path, base: str, files: Sequence[str]) -> bytes:
    """`git diff` of `files` against `base`, without the `index` lines (they churn)."""
    out = _git(tree, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
               "--src-prefix=a/", "--dst-prefix=b/", "-U3", "--diff-algorithm=myers",
               base, "--", *files).stdout
    lines = []
    in_header = False
    for line in out.splitlines(keepends=True):
        if line.startswith(b"diff --git "):
            in_header = True
        elif line.startswith(b"--- "):
            in_header = False
        elif in_header and line.startswith(b"Binary files "):
            raise TqError(f"{line.decode(errors='replace').strip()}: patches hold text only; "
                          "put the new version of that file in ggml-src/ instead")
        if not (in_header and line.startswith(b"index ")):
            lines.append(line)
    return b"".join(lines)


def _git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    # The ceiling stops git from finding an enclosing repository (a tree in a cache dir
    # inside some checkout), which would make `git apply` skip paths outside it.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.resolve().parent)}
    try:
        proc = subprocess.run(["git", *_GIT_CONFIG, *args], cwd=tree, env=env,
                              capture_output=True)
    except FileNotFoundError as exc:
        raise TqError("git is not installed: install git (tqllama applies and exports "
                      "patches with it)") from exc
    if check and proc.returncode != 0:
        raise TqError(f"`git {args[0]}` failed in {tree}: "
                      f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def _replace_dir(staging: Path, dest: Path) -> None:
    """Move `staging` to `dest`; a previous `dest` disappears only once the new one is in."""
    if not dest.exists():
        staging.rename(dest)
        return
    # The previous tree goes into the scratch directory, which its owner deletes.
    dest.rename(staging.with_name("previous"))
    staging.rename(dest)
