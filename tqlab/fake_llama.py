"""A tiny stand-in for the pinned llama.cpp: same layout, same targets, builds in seconds.

It lets the tests exercise fetching, patching and the cmake build for real without
the minutes the real tree takes; tests/test_build_integration.py covers the real one.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from tqllama.source import Pin

CMAKE = """\
cmake_minimum_required(VERSION 3.14)
project(fake_llama C)
option(LLAMA_BUILD_TESTS "tests" OFF)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_library(ggml-base SHARED ggml/src/ggml.c)
target_include_directories(ggml-base PUBLIC ggml/include)
# Like llama.cpp's build-info.cpp: the commit string reaches one small file only.
add_library(build-info STATIC tools/build-info.c)
target_compile_definitions(build-info PRIVATE BUILD_COMMIT="${LLAMA_BUILD_COMMIT}")
if (FAKE_SUFFIX)
    target_compile_definitions(build-info PRIVATE BUILD_SUFFIX="${FAKE_SUFFIX}")
endif()
set(TARGETS llama-server llama-cli llama-perplexity llama-bench)
if (LLAMA_BUILD_TESTS)
    list(APPEND TARGETS test-backend-ops test-quantize-fns)
endif()
foreach(tool ${TARGETS})
    add_executable(${tool} tools/main.c)
    target_link_libraries(${tool} ggml-base build-info)
endforeach()
"""

MAIN_C = """\
#include <stdio.h>
#include "ggml.h"

const char * build_commit(void);

/*
 * The tools of the fake tree all print the build commit and an answer from ggml.
 *
 * These lines keep the includes and main() more than two hunk contexts apart, so
 * that a patch touching both has two hunks.
 */

int main(void) {
    printf("version: %s answer %d\\n", build_commit(), ggml_answer());
    return 0;
}
"""

BUILD_INFO_C = """\
#ifndef BUILD_SUFFIX
#define BUILD_SUFFIX ""
#endif
const char * build_commit(void) { return BUILD_COMMIT BUILD_SUFFIX; }
"""

GGML_C = """\
#include "ggml.h"

int ggml_answer(void) {
    int a = 40;
    int b = 2;
    return a + b;
}
"""

FILES = {
    ".gitignore": "/build*\n*.o\n",
    "CMakeLists.txt": CMAKE,
    "include/llama.h": "/* llama.h */\n",
    "ggml/include/ggml.h": "int ggml_answer(void);\n",
    "ggml/src/ggml.c": GGML_C,
    "tools/main.c": MAIN_C,
    "tools/build-info.c": BUILD_INFO_C,
    "scripts/run.sh": "#!/bin/sh\necho run\n",
}


def write_tree(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "scripts/run.sh").chmod(0o755)
    return root


def write_sdist(path: Path, name: str = "llama_cpp_python-0.3.36") -> Pin:
    """A .tar.gz laid out like the real sdist (vendored tree, its .git file, the package's
    own .git with a submodule store); returns a Pin that matches it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {f"{name}/vendor/llama.cpp/{rel}": text for rel, text in FILES.items()}
    members[f"{name}/vendor/llama.cpp/.git"] = "gitdir: ../../.git/modules/vendor/llama.cpp\n"
    members[f"{name}/.git/modules/vendor/llama.cpp/HEAD"] = "0c1e57098bba43ac29e6\n"
    members[f"{name}/pyproject.toml"] = "[project]\n"
    with tarfile.open(path, "w:gz") as tf:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o755 if member.endswith(".sh") else 0o644
            tf.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return Pin(package="llama-cpp-python", version="0.3.36", sdist_name=path.name,
               sha256=sha, commit="0c1e57098")
