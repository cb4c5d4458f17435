"""The overlay, the patch series (atomic, with named failures, one patch per feature with a
DEP-3 header) and the round trip through a patch tree of one commit per patch."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tqlab.fake_llama import FILES, GGML_C, write_tree
from tqllama.errors import TqError
from tqllama.patching import Glue, check_patches, export_patches, make_tree, split_header
from tqllama.source import fetch


def digest(tree: Path) -> str:
    """Paths and contents of a tree, .git aside."""
    h = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree)
        if path.is_file() and rel.parts[0] != ".git":
            h.update(f"{rel}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()


def unified_diff(tree: Path, rel: str, new_text: str) -> str:
    """A git-style patch that turns `rel` in `tree` into `new_text`."""
    (tree.parent / "new").mkdir(exist_ok=True)
    new = tree.parent / "new" / Path(rel).name
    new.write_text(new_text)
    proc = subprocess.run(["git", "diff", "--no-index", "--no-color", str(tree / rel), str(new)],
                          capture_output=True, text=True)
    body = proc.stdout.split("\n", 1)[1]  # drop the `diff --git` line naming temp paths
    body = "\n".join(ln for ln in body.splitlines() if not ln.startswith(("---", "+++")))
    return f"diff --git a/{rel} b/{rel}\n--- a/{rel}\n+++ b/{rel}\n{body}\n"


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "pristine")


@pytest.fixture
def glue(tmp_path: Path) -> Glue:
    glue = Glue(tmp_path / "ggml-src", tmp_path / "patches")
    (glue.ggml_src / "ggml/src").mkdir(parents=True)
    glue.patches.mkdir()
    return glue


def write_series(glue: Glue, patches: dict[str, str]) -> None:
    for name, text in patches.items():
        (glue.patches / name).write_text(text)
    (glue.patches / "series").write_text("# order matters\n" + "".join(f"{n}\n" for n in patches))


ANSWER_43 = GGML_C.replace("int b = 2;", "int b = 3;")
MAIN_WITH_TWO_HUNKS = (FILES["tools/main.c"]
                       .replace("#include <stdio.h>\n", "#include <stdio.h>\n#include <stdlib.h>\n")
                       .replace("    return 0;\n", "    return EXIT_SUCCESS;\n"))


def test_overlay_adds_and_replaces_files_and_a_missing_series_is_empty(
    pristine: Path, glue: Glue, tmp_path: Path
) -> None:
    before = digest(pristine)
    (glue.ggml_src / "ggml/src/ggml-turbo.c").write_text("/* turbo */\n")
    (glue.ggml_src / "include").mkdir()
    (glue.ggml_src / "include/llama.h").write_text("/* replaced */\n")
    make_tree(pristine, tmp_path / "tree", glue)
    tree = tmp_path / "tree"
    assert (tree / "ggml/src/ggml-turbo.c").read_text() == "/* turbo */\n"
    assert (tree / "include/llama.h").read_text() == "/* replaced */\n"
    assert (tree / "tools/main.c").read_text() == FILES["tools/main.c"]
    assert (tree / "scripts/run.sh").stat().st_mode & 0o111
    assert digest(pristine) == before


def test_series_applies_in_order_with_comments(pristine: Path, glue: Glue, tmp_path: Path) -> None:
    write_series(glue, {
        "a.patch": unified_diff(pristine, "ggml/src/ggml.c", ANSWER_43),
        "b.patch": unified_diff(pristine, "tools/main.c", FILES["tools/main.c"] + "// b\n"),
    })
    (glue.patches / "series").write_text("# header\na.patch  # the answer\n\nb.patch\n")
    make_tree(pristine, tmp_path / "tree", glue)
    assert (tmp_path / "tree/ggml/src/ggml.c").read_text() == ANSWER_43
    assert (tmp_path / "tree/tools/main.c").read_text().endswith("// b\n")


def test_series_naming_a_missing_patch_is_an_error(pristine: Path, glue: Glue,
                                                   tmp_path: Path) -> None:
    (glue.patches / "series").write_text("nope.patch\n")
    with pytest.raises(TqError, match=r"lists nope\.patch, which does not exist"):
        make_tree(pristine, tmp_path / "tree", glue)


def test_conflicting_patch_names_file_and_hunk_and_leaves_the_tree_untouched(
    pristine: Path, glue: Glue, tmp_path: Path
) -> None:
    dest = tmp_path / "tree"
    make_tree(pristine, dest, glue)
    before = digest(dest)
    # Hunk #1 (the include) applies; hunk #2 expects a line the tree does not have.
    patch = unified_diff(pristine, "tools/main.c", MAIN_WITH_TWO_HUNKS)
    patch = patch.replace(" int main(void) {", " int main(int argc) {")
    write_series(glue, {"0001-good.patch": unified_diff(pristine, "ggml/src/ggml.c", ANSWER_43),
                        "0002-bad.patch": patch})
    with pytest.raises(TqError) as err:
        make_tree(pristine, dest, glue)
    message = str(err.value)
    assert "patch 0002-bad.patch does not apply" in message
    assert re.search(r"hunk #2 of tools/main\.c .*at tools/main\.c:\d+", message)
    assert "\n" not in message
    assert digest(dest) == before  # not even the good patch reached the tree
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_check_reports_every_patch(pristine: Path, glue: Glue) -> None:
    bad = unified_diff(pristine, "tools/main.c", MAIN_WITH_TWO_HUNKS)
    bad = bad.replace(" int main(void) {", " int main(int argc) {")
    write_series(glue, {
        "0001-good.patch": unified_diff(pristine, "ggml/src/ggml.c", ANSWER_43),
        "0002-bad.patch": bad,
        "0003-good.patch": unified_diff(pristine, "include/llama.h", "/* llama.h */\n// x\n"),
    })
    reports = check_patches(pristine, glue)
    assert [(r.name, r.applies) for r in reports] == [
        ("0001-good.patch", True), ("0002-bad.patch", False), ("0003-good.patch", True)]
    assert "hunk #2 of tools/main.c" in reports[1].reason


HEADER = "Description: the answer is 43\n what the patch is for\nForwarded: no\n---\n"


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tree,
                          check=True, capture_output=True, text=True).stdout


def test_patch_tree_is_one_commit_per_patch(pristine: Path, glue: Glue, tmp_path: Path) -> None:
    write_series(glue, {
        "0001-answer.patch": HEADER + unified_diff(pristine, "ggml/src/ggml.c", ANSWER_43),
        "0002-main.patch": unified_diff(pristine, "tools/main.c", MAIN_WITH_TWO_HUNKS),
    })
    work = tmp_path / "work"
    make_tree(pristine, work, glue, git_repo=True)
    log = git(work, "log", "--format=%s", "--reverse").splitlines()
    assert log[1:] == ["0001-answer", "0002-main"]
    assert git(work, "log", "-1", "--format=%b", "HEAD~1").startswith("Description: the answer")
    assert git(work, "show", "--name-only", "--format=", "HEAD").split() == ["tools/main.c"]
    assert git(work, "status", "--porcelain") == ""


def test_export_round_trip(pristine: Path, glue: Glue, tmp_path: Path) -> None:
    (glue.ggml_src / "ggml/src/ggml-turbo.c").write_text("/* turbo v1 */\n")
    write_series(glue, {
        "0001-answer.patch": HEADER + unified_diff(pristine, "ggml/src/ggml.c", ANSWER_43),
        "old-name.patch": unified_diff(pristine, "include/llama.h", "/* llama.h */\n// x\n"),
    })
    work = tmp_path / "work"
    make_tree(pristine, work, glue, git_repo=True)
    assert (work / "ggml/src/ggml.c").read_text() == ANSWER_43

    # The maintainer edits the first patch (a fixup squashed into its commit), drops the
    # second, adds a patch of their own that touches the overlay and adds a file.
    (work / "ggml/src/ggml.c").write_text(ANSWER_43.replace("int a = 40;", "int a = 41;"))
    git(work, "commit", "-qam", "fixup! 0001-answer")
    git(work, "-c", "sequence.editor=sed -i -e 's/^pick \\(.*old-name\\)/drop \\1/'",
        "rebase", "-q", "-i", "--autosquash", "HEAD~3")
    (work / "tools/main.c").write_text(MAIN_WITH_TWO_HUNKS)
    (work / "ggml/src/ggml-turbo.c").write_text("/* turbo v2 */\n")
    (work / "ggml/src/ggml-turbo-new.c").write_text("/* new */\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "0002 main: exit codes")
    (work / "build").mkdir()
    (work / "build/junk.o").write_text("ignored by llama.cpp's .gitignore")
    report = export_patches(work, glue)

    assert report.patches == {"0001-answer.patch": ["ggml/src/ggml.c"],
                              "0002-main-exit-codes.patch": ["tools/main.c"]}
    assert report.ggml_src_written == ["ggml/src/ggml-turbo-new.c", "ggml/src/ggml-turbo.c"]
    assert report.patches_removed == ["old-name.patch"]
    assert sorted(p.name for p in glue.patches.iterdir()) == [
        "0001-answer.patch", "0002-main-exit-codes.patch", "series"]
    answer = (glue.patches / "0001-answer.patch").read_text()
    header, diff = split_header(answer)
    assert answer.startswith(HEADER) and header + "---\n" == HEADER  # the header is kept
    assert diff.startswith("diff --git a/ggml/src/ggml.c b/ggml/src/ggml.c\n--- a/")
    assert "int a = 41;" in diff and "\nindex " not in answer
    # a commit without a header gets one: its subject, not forwarded
    assert (glue.patches / "0002-main-exit-codes.patch").read_text().startswith(
        "Description: 0002 main: exit codes\nForwarded: no\n---\ndiff --git a/tools/main.c")

    # The exported glue rebuilds exactly the edited tree from the pristine one...
    rebuilt = tmp_path / "rebuilt"
    make_tree(pristine, rebuilt, glue, git_repo=True)
    shutil.rmtree(work / "build")
    assert digest(rebuilt) == digest(work)
    # ... and exporting that unchanged tree writes the same bytes.
    before = {p.name: p.read_bytes() for p in glue.patches.iterdir()}
    again = export_patches(rebuilt, glue)
    assert {p.name: p.read_bytes() for p in glue.patches.iterdir()} == before
    assert again.patches == report.patches and not again.patches_removed


def test_export_refuses_uncommitted_edits(pristine: Path, glue: Glue, tmp_path: Path) -> None:
    write_series(glue, {"0001-answer.patch": HEADER + unified_diff(pristine, "ggml/src/ggml.c",
                                                                   ANSWER_43)})
    work = tmp_path / "work"
    make_tree(pristine, work, glue, git_repo=True)
    (work / "tools/main.c").write_text(MAIN_WITH_TWO_HUNKS)
    before = {p.name: p.read_bytes() for p in glue.patches.iterdir()}
    with pytest.raises(TqError, match=r"uncommitted changes: commit each into the patch") as err:
        export_patches(work, glue)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in glue.patches.iterdir()} == before


def test_export_refuses_a_tree_it_did_not_make(pristine: Path, glue: Glue) -> None:
    with pytest.raises(TqError, match="was not made by `tqllama patch tree`"):
        export_patches(pristine, glue)


def test_the_series_is_cut_by_feature() -> None:
    """Every patch of patches/ says what it is for (DEP-3: Description, Forwarded), depends
    only on patches before it, and stays reviewable (at most 500 lines)."""
    glue = Glue.default()
    names = glue.series_names()
    assert len(names) >= 10
    for i, patch in enumerate(glue.series()):
        text = patch.read_text()
        header, diff = split_header(text)
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", header, re.MULTILINE))
        assert fields.get("Description"), patch.name
        assert fields.get("Forwarded") == "no", patch.name
        for dep in filter(None, (d.strip() for d in fields.get("Depends-On", "").split(","))):
            assert f"{dep}.patch" in names[:i], f"{patch.name} depends on {dep}, not before it"
        assert diff.startswith("diff --git "), patch.name
        assert len(text.splitlines()) <= 500, f"{patch.name}: {len(text.splitlines())} lines"


@pytest.mark.slow
def test_real_series_round_trip(tmp_path: Path) -> None:
    """On the pinned llama.cpp: the patch tree of patches/ exported unedited reproduces
    patches/ and ggml-src/ byte for byte (each patch applied in order on the way)."""
    real = Glue.default()
    copy = Glue(tmp_path / "ggml-src", tmp_path / "patches")
    shutil.copytree(real.ggml_src, copy.ggml_src)
    shutil.copytree(real.patches, copy.patches)
    tree = tmp_path / "tree"
    make_tree(fetch(), tree, copy, git_repo=True)
    assert git(tree, "log", "--format=%s", "--reverse").splitlines()[1:] == [
        n.removesuffix(".patch") for n in real.series_names()]
    export_patches(tree, copy)
    for glue_dir, copy_dir in ((real.patches, copy.patches), (real.ggml_src, copy.ggml_src)):
        files = sorted(p.relative_to(glue_dir) for p in glue_dir.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(copy_dir) for p in copy_dir.rglob("*")
                               if p.is_file())
        for rel in files:
            assert (glue_dir / rel).read_bytes() == (copy_dir / rel).read_bytes(), rel
