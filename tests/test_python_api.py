"""The Python API: the llama-cpp-python wheel of the patched tree, built through
`tqllama.pywheel` (cached like the tools), installed into a scratch directory, and run in
subprocesses: the README's example, the bindings against the patched C headers, greedy
determinism and a state round trip with turbo caches, and llama-cpp-python's OpenAI server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tqlab.policies import broken, write_policy
from tqlab.server import free_port, serve
from tqllama import build, pywheel
from tqllama.cli import cli
from tqllama.paths import REPO_ROOT
from tqllama.types import TURBO2, TURBO2_QJL, TURBO3, TURBO3_QJL, TURBO4, TURBO4_QJL

pytestmark = pytest.mark.slow

# The fields of struct llama_context_params that tqllama's patches add; default values.
TQ_CONTEXT_FIELDS = {"cache_boundary_layers": 0, "type_k_boundary": 8, "type_v_boundary": 8,
                     "cache_policy_n_layer": 0, "cache_policy_auto": True}


@pytest.fixture(scope="module")
def wheel() -> Path:
    return pywheel.build_wheel()


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed on its own (its dependencies come from the `python` extra)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    return target


def python(site: Path, code: str, *args: str, timeout: float = 300,
           ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO_ROOT)


def readme_example() -> str:
    """The first python block of the README's section 'Python'."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Python\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no section '## Python'"
    block = re.search(r"^```python\n(.*?)^```", section[1], re.MULTILINE | re.DOTALL)
    assert block, "README.md's section 'Python' has no python code block"
    return block[1]


def test_wheel_is_cached_and_names_its_build(wheel: Path) -> None:
    started = time.monotonic()
    assert pywheel.build_wheel() == wheel  # the second build is a no-op
    assert time.monotonic() - started < 30
    assert re.fullmatch(r"llama_cpp_python-0\.3\.36\+tq[0-9a-f]{8}-py3-none-\w+\.whl",
                        wheel.name), wheel.name


def test_cli_prints_the_cached_wheel(wheel: Path) -> None:
    result = CliRunner().invoke(cli, ["build", "--python", "--wheel-only"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{wheel}\n"


def test_readme_python_example_runs(site: Path, wheel: Path) -> None:
    proc = python(site, readme_example())
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "turbo4 4.25"
    assert len(" ".join(lines[:-1]).split()) >= 3  # the generated text
    # llama.cpp's own report of the cache it allocated
    assert re.search(r"llama_kv_cache: size = .*K \(turbo4\).*V \(turbo3\)", proc.stderr)
    # and the package is the wheel's, not another llama_cpp on the path
    version = python(site, "import llama_cpp; print(llama_cpp.__version__)")
    assert version.stdout.strip() == wheel.name.split("-")[1]


BINDING = """
import ctypes, json, llama_cpp
p = llama_cpp.llama_context_default_params()
S = llama_cpp.llama_context_params
print(json.dumps({
    "types": [llama_cpp.GGML_TYPE_TURBO2, llama_cpp.GGML_TYPE_TURBO3, llama_cpp.GGML_TYPE_TURBO4,
              llama_cpp.GGML_TYPE_TURBO2_QJL, llama_cpp.GGML_TYPE_TURBO3_QJL,
              llama_cpp.GGML_TYPE_TURBO4_QJL, llama_cpp.GGML_TYPE_COUNT],
    "size": ctypes.sizeof(S),
    "offsets": {name: getattr(S, name).offset for name, _ in S._fields_},
    "defaults": {name: getattr(p, name) for name in %r},
}))
"""


def test_bindings_match_the_patched_headers(site: Path, wheel: Path, tmp_path: Path) -> None:
    """The ctypes struct must have the C layout, or every field after a difference is read
    from the wrong bytes: sizes and offsets come from the headers the wheel was built from."""
    proc = python(site, BINDING % list(TQ_CONTEXT_FIELDS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    binding = json.loads(proc.stdout)
    assert binding["types"][:6] == [TURBO2, TURBO3, TURBO4, TURBO2_QJL, TURBO3_QJL, TURBO4_QJL]
    assert binding["defaults"] == TQ_CONTEXT_FIELDS

    tree = build.backend_dir("python-cpu") / "src" / "vendor" / "llama.cpp"
    program = tmp_path / "layout.c"
    program.write_text("\n".join([
        "#include <stddef.h>", "#include <stdio.h>", '#include "llama.h"', "int main(void) {",
        '    printf("types %d %d %d %d %d %d %d\\n", GGML_TYPE_TURBO2, GGML_TYPE_TURBO3, '
        "GGML_TYPE_TURBO4, GGML_TYPE_TURBO2_QJL, GGML_TYPE_TURBO3_QJL, GGML_TYPE_TURBO4_QJL, "
        "GGML_TYPE_COUNT);",
        '    printf("size %zu\\n", sizeof(struct llama_context_params));',
        *(f'    printf("{name} %zu\\n", offsetof(struct llama_context_params, {name}));'
          for name in binding["offsets"]),
        "    return 0;", "}", ""]))
    exe = tmp_path / "layout"
    cc = subprocess.run(["cc", "-o", str(exe), str(program), f"-I{tree / 'include'}",
                         f"-I{tree / 'ggml' / 'include'}"], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr[-3000:]  # a field the header does not have fails here
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    c = {name: [int(v) for v in values] for name, *values in map(str.split, out.splitlines())}
    assert binding["types"] == c.pop("types")
    assert binding["offsets"] == {name: v for name, (v,) in c.items() if name != "size"}
    assert [binding["size"]] == c["size"], "the C struct has fields the binding lacks"


GREEDY = """
import json, sys
from llama_cpp import Llama
from tqllama.types import TURBO3, TURBO4
PROMPT = "The history of the city begins with a small settlement on the river."

def load():
    return Llama(sys.argv[1], type_k=TURBO4, type_v=TURBO3, flash_attn=True, n_ctx=1024,
                 n_threads=2, verbose=False)

def complete(llm):
    return llm.create_completion(PROMPT, max_tokens=24, temperature=0)["choices"][0]["text"]

llm = load()
runs = []
for _ in range(3):
    llm.reset()
    runs.append(complete(llm))
# the prompt's turbo cache saved, restored into this context and into a new one: each
# continues from the restored cells (re-evaluating only the last prompt token)
llm.reset()
llm.eval(llm.tokenize(PROMPT.encode()))
state = llm.save_state()
llm.load_state(state)
here = complete(llm)
other = load()
other.load_state(state)
print(json.dumps({"runs": runs, "here": here, "other": complete(other),
                  "state_bytes": state.llama_state_size}))
"""


def test_greedy_generation_is_deterministic_and_state_restores(site: Path, model: Path) -> None:
    proc = python(site, GREEDY, str(model))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert len(out["runs"][0].split()) >= 5
    assert out["runs"] == [out["runs"][0]] * 3
    assert out["other"] == out["here"]
    assert out["state_bytes"] > 0


POLICY = """
import sys
from llama_cpp import Llama
from tqllama.types import TURBO4
llm = Llama(sys.argv[1], type_k=TURBO4, type_v=TURBO4, flash_attn=True, n_ctx=256, n_threads=2,
            cache_policy=sys.argv[2])
print(llm.create_completion("The history of the city", max_tokens=8, temperature=0)
      ["choices"][0]["text"])
"""


def test_a_cache_policy_in_python(site: Path, model: Path, tmp_path: Path) -> None:
    """Llama(cache_policy=FILE) gives each layer its types (the KV size line shows the mix);
    a policy for another model is refused before any work, with libllama's line."""
    policy = write_policy(tmp_path / "p.policy", k={0: "q8_0", 29: "q8_0"}, v={29: "f16"})
    proc = python(site, POLICY, str(model), str(policy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.split()) >= 2
    assert re.search(r"K \(turbo4\): .* \+ K \(q8_0\): .* V \(turbo4\): .* \+ V \(f16\)",
                     proc.stderr)
    other, message = broken(tmp_path, "other model")
    proc = python(site, POLICY, str(model), str(other))
    assert proc.returncode != 0 and message in proc.stderr
    proc = python(site, POLICY, str(model), str(tmp_path / "missing.policy"))
    assert proc.returncode != 0 and "cannot read the cache policy" in proc.stderr


@pytest.fixture
def openai_server(site: Path, model: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """llama-cpp-python's OpenAI-compatible server with a turbo4 K and turbo3 V cache."""
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
           "--type_k", str(TURBO4), "--type_v", str(TURBO3), "--flash_attn", "true",
           "--n_ctx", "1024", "--n_threads", "2", "--host", "127.0.0.1", "--port", str(port)]
    with serve(cmd, log, f"{url}/v1/models", env={**os.environ, "PYTHONPATH": str(site)}):
        yield url, log


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200
        return json.loads(r.read())


def test_openai_server_with_turbo_caches(openai_server: tuple[str, Path]) -> None:
    url, log = openai_server
    out = post_json(f"{url}/v1/completions", {
        "prompt": "The history of the city begins with", "max_tokens": 16, "temperature": 0})
    assert out["usage"]["completion_tokens"] > 0
    assert len(out["choices"][0]["text"].split()) >= 3
    chat = post_json(f"{url}/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
        "temperature": 0})
    assert chat["choices"][0]["message"]["content"].strip()
    assert re.search(r"K \(turbo4\).*V \(turbo3\)", log.read_text())
