"""A server on loopback (llama-server, llama-cpp-python's): started until its health URL
answers, stopped on the way out; JSON requests with a timeout."""

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

from tqllama.errors import TqError
from tqllama.proc import stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 3600) -> tuple[int, dict]:
    """POST JSON; the status and the JSON answer, error answers included."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@contextmanager
def serve(cmd: list[str], log: Path, health_url: str, timeout: float = 300,
          env: dict[str, str] | None = None,
          append: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until `health_url` answers 200; stop it on the way out. A server that
    exits or never answers is a TqError quoting its log's last line. Its output goes to
    `log`, after what the file holds when `append`."""
    with log.open("a" if append else "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                raise TqError(f"{Path(cmd[0]).name} exited with {proc.returncode} before it "
                              f"served: {tail[-1] if tail else 'no output'} (log: {log})")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TqError(f"{Path(cmd[0]).name} did not answer {health_url} within "
                              f"{timeout:.0f} s (log: {log})")
            time.sleep(0.5)
        yield proc
    finally:
        stop(proc, grace=30)


@contextmanager
def server(binary: Path, model: Path, log: Path, *args: str,
           env: dict[str, str] | None = None, append: bool = False) -> Iterator[str]:
    """llama-server on a free loopback port (in `env`, this process's when None); yields its
    base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
    with serve(cmd, log, f"{url}/health", env=env, append=append):
        yield url
