"""The overlay, the patch series (atomic, with named failures) and the export round trip."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tqlab.fake_llama import FILES, GGML_C, write_tree
from tqllama.errors import TqError
from tqllama.patching import Glue, area_of, check_patches, export_patches, make_tree


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


def test_areas() -> None:
    assert area_of("ggml/include/ggml.h") == "0001-ggml-core"
    assert area_of("ggml/src/ggml.c") == "0001-ggml-core"
    assert area_of("ggml/src/CMakeLists.txt") == "0001-ggml-core"
    assert area_of("ggml/src/ggml-cpu/ops.cpp") == "0002-ggml-cpu"
    assert area_of("src/llama-kv-cache.cpp") == "0003-llama"
    assert area_of("common/arg.cpp") == "0004-tools"
    assert area_of("tools/llama-bench/llama-bench.cpp") == "0004-tools"
    assert area_of("tests/test-backend-ops.cpp") == "0005-tests"
    assert area_of("ggml/src/ggml-cuda/fattn.cu") == "0006-cuda"
    assert area_of("ggml/CMakeLists.txt") == "0006-cuda"
    assert area_of("ggml/src/ggml-metal/ggml-metal.m") == "0007-metal"
    assert area_of("gguf-py/gguf/constants.py") == "0099-other"
    assert area_of("ggml/src/ggml-vulkan/ggml-vulkan.cpp") == "0099-other"


def test_export_round_trip(pristine: Path, glue: Glue, tmp_path: Path) -> None:
    (glue.ggml_src / "ggml/src/ggml-turbo.c").write_text("/* turbo v1 */\n")
    write_series(glue, {"old-name.patch": unified_diff(pristine, "ggml/src/ggml.c", ANSWER_43)})
    work = tmp_path / "work"
    make_tree(pristine, work, glue, git_repo=True)
    assert (work / "ggml/src/ggml.c").read_text() == ANSWER_43

    # The maintainer edits the tree: upstream files in two areas, the overlay, a new file.
    (work / "ggml/src/ggml.c").write_text(ANSWER_43.replace("int a = 40;", "int a = 41;"))
    (work / "tools/main.c").write_text(MAIN_WITH_TWO_HUNKS)
    (work / "ggml/src/ggml-turbo.c").write_text("/* turbo v2 */\n")
    (work / "ggml/src/ggml-turbo-new.c").write_text("/* new */\n")
    (work / "build").mkdir()
    (work / "build/junk.o").write_text("ignored by llama.cpp's .gitignore")
    report = export_patches(work, glue)

    assert report.patches == {"0001-ggml-core.patch": ["ggml/src/ggml.c"],
                              "0004-tools.patch": ["tools/main.c"]}
    assert report.ggml_src_written == ["ggml/src/ggml-turbo-new.c", "ggml/src/ggml-turbo.c"]
    assert report.patches_removed == ["old-name.patch"]
    assert sorted(p.name for p in glue.patches.iterdir()) == [
        "0001-ggml-core.patch", "0004-tools.patch", "series"]
    core = (glue.patches / "0001-ggml-core.patch").read_text()
    assert core.startswith("diff --git a/ggml/src/ggml.c b/ggml/src/ggml.c\n--- a/")
    assert "\nindex " not in core

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


def test_export_refuses_a_tree_it_did_not_make(pristine: Path, glue: Glue) -> None:
    with pytest.raises(TqError, match="was not made by `tqllama patch tree`"):
        export_patches(pristine, glue)
