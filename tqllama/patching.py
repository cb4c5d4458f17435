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

The series is cut by feature, as quilt and gbp-pq keep one: each patch is one change a
maintainer can review, rebase and upstream on its own, and begins with a DEP-3 header
(Description, Depends-On, Forwarded) that `git apply` skips. `tqllama patch tree` turns
the series into one git commit per patch, so that editing a feature is editing its commit
(`git commit --fixup`, `git rebase -i --autosquash`); `tqllama patch export` writes each
commit back as its patch, byte for byte what it was when nothing changed.
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
from pathlib import Path, PurePosixPath

from tqllama import paths
from tqllama.errors import TqError
from tqllama.source import PIN, tree_files

SERIES_HEADER = (
    "# Applied in order after ggml-src/ is laid over the pinned tree: one patch per feature,\n"
    "# each with a DEP-3 header. Written by `tqllama patch export` (tqllama/patching.py).\n"
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


def split_header(text: str) -> tuple[str, str]:
    """A patch file -> (its DEP-3 header, without the closing `---` line; its diff)."""
    start = text.find("diff --git ")
    if start < 0:
        return text, ""
    return text[:start].removesuffix("---\n"), text[start:]


def join_header(header: str, diff: str) -> str:
    return f"{header}---\n{diff}" if header else diff


def make_tree(pristine: Path, dest: Path, glue: Glue | None = None, *,
              git_repo: bool = False) -> None:
    """Build the patched tree at `dest`, replacing what is there only on success.

    With `git_repo`, `dest` is also a git repository: its first commit is the pristine tree
    plus the ggml-src overlay, then one commit per patch, its subject the patch's name and
    its body the patch's header, so that `export_patches` turns the (edited) commits back
    into the series.
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
            if git_repo:
                header, _ = split_header(patch.read_text())
                _git(staging, "add", "-A", "-f", ".")
                _git(staging, "commit", "-q", "--no-verify", "--allow-empty",
                     "--cleanup=verbatim", "-m",
                     f"{patch.name.removesuffix('.patch')}\n\n{header}")
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

    Each commit after the base becomes one patch, named by its subject, its body the DEP-3
    header, in commit order. New files and files of the overlay go (back) to ggml-src/ as
    they are at HEAD. Exporting an unchanged tree writes identical bytes.
    """
    glue = glue or Glue.default()
    marker_path = tree / ".git" / _TREE_MARKER
    if not marker_path.is_file():
        raise TqError(f"{tree} was not made by `tqllama patch tree`; make one with "
                      "`tqllama patch tree DIR`, edit it there, then export it")
    marker = json.loads(marker_path.read_text())
    base, overlay = marker["base"], set(marker["overlay"])
    if _git(tree, "status", "--porcelain").stdout.strip():
        raise TqError(f"{tree} has uncommitted changes: commit each into the patch it belongs "
                      f"to (`git commit --fixup=COMMIT`, then `git rebase -i --autosquash "
                      f"{base[:12]}`) or as a new patch (`git commit -m NAME`), then export")
    commits = _git(tree, "rev-list", "--reverse", f"{base}..HEAD").stdout.decode().split()

    changes = _name_status(tree, base, "HEAD")  # path -> A/M/D/T over the whole series
    to_src = {p for p, kind in changes.items() if p in overlay or kind == "A"}
    report = ExportReport()
    for path in sorted(to_src):
        target = glue.ggml_src / path
        if changes[path] == "D":
            target.unlink(missing_ok=True)
            report.ggml_src_removed.append(path)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / path, target)
            report.ggml_src_written.append(path)

    old_series = glue.series_names()
    glue.patches.mkdir(parents=True, exist_ok=True)
    new_names: list[str] = []
    for commit in commits:
        # the message exactly as committed (git log would add a newline)
        raw = _git(tree, "cat-file", "commit", commit).stdout.decode()
        subject, _, body = raw.partition("\n\n")[2].partition("\n\n")
        files = sorted(p for p in _name_status(tree, f"{commit}^", commit) if p not in to_src)
        if not files:
            continue
        name = f"{_slug(subject)}.patch"
        if name in new_names:
            raise TqError(f"two commits of {tree} are named {subject.strip()!r}: give each "
                          "patch its own name (`git rebase -i`, reword)")
        header = body if body.strip() else f"Description: {subject.strip()}\nForwarded: no\n"
        diff = _diff(tree, f"{commit}^", commit, files).decode()
        (glue.patches / name).write_bytes(join_header(header, diff).encode())
        report.patches[name] = files
        new_names.append(name)
    for name in sorted(set(old_series) - set(new_names)):
        if (glue.patches / name).is_file():
            (glue.patches / name).unlink()
            report.patches_removed.append(name)
    (glue.patches / "series").write_text(SERIES_HEADER + "".join(f"{n}\n" for n in new_names))
    return report


def _name_status(tree: Path, old: str, new: str) -> dict[str, str]:
    """path -> A/M/D/T between two commits."""
    status = _git(tree, "diff", "--name-status", "--no-renames", "-z", old, new).stdout
    fields = status.decode().split("\0")[:-1]  # "KIND\0PATH\0" pairs
    return dict(zip(fields[1::2], fields[0::2], strict=True))


def _slug(subject: str) -> str:
    """A commit subject as a patch file name (what `tqllama patch tree` wrote is kept)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", subject.strip()).strip("-.")
    if not slug:
        raise TqError("a commit of the patch tree has an empty subject: the subject names "
                      "its patch (`git rebase -i`, reword)")
    return slug


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


def _diff(tree: Path, old: str, new: str, files: Sequence[str]) -> bytes:
    """`git diff` of `files` between two commits, without the `index` lines (they churn)."""
    out = _git(tree, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
               "--src-prefix=a/", "--dst-prefix=b/", "-U3", "--diff-algorithm=myers",
               old, new, "--", *files).stdout
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
