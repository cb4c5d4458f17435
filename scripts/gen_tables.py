#!/usr/bin/env python3
"""Writes ggml-src/ggml/src/ggml-turbo-tables.h from tqllama/quant/tables.py.

Usage: python scripts/gen_tables.py [--check]   (--check: exit 1 if the file is stale)
"""

from __future__ import annotations

import sys

from tqllama.paths import ggml_src_dir
from tqllama.quant.header import HEADER_RELPATH, render


def main(argv: list[str]) -> int:
    path = ggml_src_dir() / HEADER_RELPATH
    text = render()
    if "--check" in argv:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run scripts/gen_tables.py", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
