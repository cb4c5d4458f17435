"""llama-server under test: two threads and verbose logs (the KV cache lines), through the
product's loopback runner (tqllama.serve)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqllama.serve import free_port, post, serve

__all__ = ["PROMPT", "complete", "free_port", "post", "serve", "server", "server_process"]

# the server tests' prompt: plain prose the model continues deterministically at temperature 0
PROMPT = ("The history of the city begins with a small settlement on the river. Over the "
          "centuries it grew into a market town, and later")


@contextmanager
def server_process(binary: str, model: Path, log: Path, *args: str,
                   ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve([binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                "-t", "2", "-lv", "4", *args], log, f"{url}/health") as proc:
        yield url, proc


@contextmanager
def server(binary: str, model: Path, log: Path, *args: str) -> Iterator[str]:
    with server_process(binary, model, log, *args) as (url, _):
        yield url


def complete(url: str, **body: object) -> dict:
    status, out = post(f"{url}/completion", body)
    assert status == 200, out
    return out
