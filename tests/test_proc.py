"""tqllama.proc, the runner of the build, the wheel and the sweep's tools: logs, progress
lines, one-line failures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tqllama.proc import BuildSteps, StatusLine, ToolError, run


def test_steps_of_two_commands_in_one_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    run(["printf", "configured"], log)  # no newline at its end
    shown = io.StringIO()
    lines: list[str] = []

    def line(text: str) -> None:
        lines.append(text)
        steps.line(text)

    with BuildSteps(StatusLine(shown, live=False)) as steps:
        run(["sh", "-c", 'for i in 1 2 3 4; do echo "[$i/4] cc $i.c"; done; printf tail'], log,
            append=True, on_line=line)
    assert lines == ["[1/4] cc 1.c", "[2/4] cc 2.c", "[3/4] cc 3.c", "[4/4] cc 4.c", "tail"]
    assert shown.getvalue() == "".join(f"tqllama: build {i}/4\n" for i in range(1, 5))
    text = log.read_text().splitlines()
    assert text[:3] == ["# printf configured", "configured", "# sh -c 'for i in 1 2 3 4; "
                        "do echo \"[$i/4] cc $i.c\"; done; printf tail'"]


def test_a_terminal_sees_one_status_line(tmp_path: Path) -> None:
    shown = io.StringIO()
    with BuildSteps(StatusLine(shown, live=True)) as steps:
        # the second as pip wheel -v shows it
        run(["sh", "-c", 'echo "[1/2] a"; echo noise; echo "  [2/2] b"'], tmp_path / "log",
            on_line=steps.line)
    assert shown.getvalue() == "\r\033[K[1/2] a\r\033[K[2/2] b\n"


def test_a_failed_step_names_the_error_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with pytest.raises(ToolError) as err:
        run(["sh", "-c", 'echo "CMake Error at CMakeLists.txt:3 (message):"; '
                         'echo "  no turbo for you"; echo; echo "-- Configuring incomplete"; '
                         "exit 1"], log, what="cmake configure")
    assert str(err.value) == ("cmake configure failed: CMake Error at CMakeLists.txt:3 "
                              "(message): | no turbo for you | -- Configuring incomplete "
                              f"(full log: {log})")


def test_explain_and_silence(tmp_path: Path) -> None:
    log = tmp_path / "tool.log"
    with pytest.raises(ToolError, match=r"^sh was killed by signal 9: it printed nothing"):
        run(["sh", "-c", "kill -9 $$"], log)
    with pytest.raises(ToolError, match=r"^sh exited with 2: pass a longer --text \(full log"):
        run(["sh", "-c", "echo short; exit 2"], log, explain=lambda _: "pass a longer --text")
