"""A server under test on loopback (llama-server, llama-cpp-python's): started until its
health URL answers, stopped on the way out; JSON requests with a timeout."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(cmd: list[str], log: Path, health_url: str, env: dict[str, str] | None = None,
          ) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until `health_url` answers 200 (120 s at most); stop it on the way out."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{cmd[0]} did not become healthy in 120 s"
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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


def post(url: str, body: dict, timeout: float = 300) -> tuple[int, dict]:
    """POST JSON; the status and the JSON answer, error answers included."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def complete(url: str, **body: object) -> dict:
    status, out = post(f"{url}/completion", body)
    assert status == 200, out
    return out
