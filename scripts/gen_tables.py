#!/usr/bin/env python3
"""Writes ggml-src/ggml/src/ggml-turbo-tables.h from tqllama/quant/tables.py and
ggml-trellis-tables.h beside it from tqllama/quant/trellis.py.

Usage: python scripts/gen_tables.py [--check]   (--check: exit 1 if the file is stale)
"""

from __future__ import annotations

import sys

from tqllama.paths import ggml_src_dir
from tqllama.quant.header import HEADER_RELPATH, TRELLIS_HEADER_RELPATH, render, render_trellis


def main(argv: list[str]) -> int:
    stale = 0
    for relpath, text in ((HEADER_RELPATH, render()), (TRELLIS_HEADER_RELPATH, render_trellis())):
        path = ggml_src_dir() / relpath
        if "--check" in argv:
            current = path.read_text() if path.exists() else ""
            if current != text:
                print(f"{path} is stale: run scripts/gen_tables.py", file=sys.stderr)
                stale = 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
