"""Falsifiers for the ``serve`` contract (contracts/serve.yaml): ``albor serve`` started on a free loopback
port in its own process, driven by a real HTTP client, and stopped."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from albor import complete
from albor.backend import LlamaCppBackend
from albor.generate import encode, fim_prompt
from falsification.exports import need

if TYPE_CHECKING:
    import httpx

pytestmark = pytest.mark.slow  # a server process starts and loads the model
# The server's default repeat_penalty is 1.1; greedy text equals the backend's only at 1.0.
PROMPT = 'import re\nassert re.match("<s>", s)  # </s>\ndef fib(n):'
FIM = ("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")


def _text(completion: str) -> str:
    """A random model emits bytes that are not UTF-8: Albor's decoder shows U+FFFD, llama-cpp-python drops them."""
    return completion.replace("\ufffd", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: Path, port: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "albor.serve", str(model), "--port", str(port), "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def f16(random_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("llama_cpp")
    need("llama_cpp.server.app")  # the server's own dependencies: fastapi, sse-starlette, starlette-context
    need("uvicorn")
    need("httpx")
    from albor.export.export_gguf import export_gguf

    return export_gguf(random_run, tmp_path_factory.mktemp("gguf") / "model-f16.gguf", "f16")


@pytest.fixture(scope="module")
def server(f16: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    import httpx

    port = _free_port()
    proc = _start(f16, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server exited: {proc.stdout.read() if proc.stdout else ''}"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def backend(f16: Path) -> LlamaCppBackend:
    return LlamaCppBackend(f16)


def _post(url: str, path: str, body: dict | bytes) -> httpx.Response:
    import httpx

    if isinstance(body, bytes):
        return httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    return httpx.post(url + path, json=body, timeout=60)


@pytest.mark.claim("SERVE-001")
def test_completion_over_http(server: tuple[str, subprocess.Popen[str]], backend: LlamaCppBackend) -> None:
    url, _ = server
    want = _text("".join(complete.completion(backend, PROMPT, max_new_tokens=24)))
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "repeat_penalty": 1.0}
    r = _post(url, "/v1/completions", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["text"] == want
    assert out["usage"]["prompt_tokens"] == len(encode(backend.tokenizer, PROMPT))
    r = _post(url, "/v1/completions", body | {"stream": True})
    assert r.status_code == 200, r.text
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == want


@pytest.mark.claim("SERVE-002")
def test_infill_over_http(server: tuple[str, subprocess.Popen[str]], backend: LlamaCppBackend) -> None:
    url, _ = server
    want = _text("".join(complete.completion(backend, prefix=FIM[0], suffix=FIM[1], max_new_tokens=24)))
    n_prompt = len(fim_prompt(backend.tokenizer, *FIM, 24, backend.max_seq_len))
    r = _post(
        url,
        "/v1/completions",
        {"prompt": FIM[0], "suffix": FIM[1], "max_tokens": 24, "temperature": 0, "repeat_penalty": 1.0},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == want and r.json()["usage"]["prompt_tokens"] == n_prompt
    body = {"input_prefix": FIM[0], "input_suffix": FIM[1], "n_predict": 24, "input_extra": [], "cache_prompt": True}
    r = _post(url, "/infill", body)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == want and r.json()["tokens_evaluated"] == n_prompt


@pytest.mark.claim("SERVE-003")
def test_bad_requests_get_http_errors(server: tuple[str, subprocess.Popen[str]], backend: LlamaCppBackend) -> None:
    url, proc = server
    r = _post(url, "/v1/completions", b"{not json")
    assert r.status_code == 422, r.text
    r = _post(url, "/v1/completions", {"prompt": "x", "max_tokens": "many"})
    assert r.status_code == 422 and "max_tokens" in r.text, r.text
    r = _post(url, "/infill", {"input_prefix": 3, "n_predict": 0})
    assert r.status_code == 422 and "n_predict" in r.text, r.text
    # Past the trained context, within the one llama.cpp pads to a multiple of 256.
    long = "x = 1\n" * (backend.max_seq_len // 2)
    assert backend.max_seq_len < len(encode(backend.tokenizer, long)) < 256
    r = _post(url, "/v1/completions", {"prompt": long, "max_tokens": 4})
    assert r.status_code == 400 and str(backend.max_seq_len) in r.text, r.text
    r = _post(url, "/infill", {"input_prefix": long, "n_predict": 4})
    assert r.status_code == 400 and str(backend.max_seq_len) in r.text, r.text
    assert proc.poll() is None
    r = _post(url, "/v1/completions", {"prompt": "def f():", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text


@pytest.mark.claim("SERVE-004")
def test_loopback_and_shutdown(f16: Path, tmp_path: Path) -> None:
    import httpx

    missing = subprocess.run(
        [sys.executable, "-m", "albor.serve", str(tmp_path / "none.gguf")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "none.gguf" in missing.stderr
    port = _free_port()
    proc = _start(f16, port)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert listening.split() and all(
            line.split()[3] == f"127.0.0.1:{port}" for line in listening.strip().splitlines()
        ), listening
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)


# /infill's request fields as Albor documents them: (JSON-schema type, default, bounds, description).
INFILL_FIELDS = {
    "input_prefix": ("string", "", {}, "the code before the cursor"),
    "input_suffix": ("string", "", {}, "the code after the cursor"),
    "prompt": ("string", "", {}, "text that follows input_prefix (the cursor's line so far)"),
    "n_predict": ("integer", 128, {"minimum": 1}, "tokens to generate at most"),
    "temperature": ("number", 0.0, {"minimum": 0}, "0 is greedy"),
    "top_k": ("integer", 40, {"minimum": 0}, None),
    "top_p": ("number", 0.95, {"exclusiveMinimum": 0, "maximum": 1}, None),
}
# The first value outside each bound.
OUTSIDE = [("n_predict", 0), ("temperature", -0.01), ("top_k", -1), ("top_p", 0.0), ("top_p", 1.0 + 1e-9)]


@pytest.mark.claim("SERVE-005")
def test_the_infill_request_is_the_documented_one(server: tuple[str, subprocess.Popen[str]]) -> None:
    import httpx

    url, _ = server
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()["components"]["schemas"]["InfillRequest"]
    props = schema["properties"]
    for name, (kind, default, bounds, description) in INFILL_FIELDS.items():
        got = props[name]
        assert (got.get("type"), got.get("default"), got.get("description")) == (kind, default, description), name
        assert {k: got[k] for k in ("minimum", "exclusiveMinimum", "maximum") if k in got} == bounds, name
    assert props["seed"].get("default") is None and {t.get("type") for t in props["seed"]["anyOf"]} == {
        "integer",
        "null",
    }
    assert props["stop"]["type"] == "array" and props["stop"]["items"] == {"type": "string"}
    assert "required" not in schema, "every field has a default: an editor may send only what it has"
    # Each bound is enforced, naming its field; a field an editor sends beyond these is ignored.
    for name, value in OUTSIDE:
        r = _post(url, "/infill", {"input_prefix": "x = ", name: value})
        assert r.status_code == 422 and name in r.text, (name, r.text)
    body = {"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 3, "temperature": 0}
    plain = _post(url, "/infill", body)
    extra = _post(
        url, "/infill", {**body, "input_extra": [{"filename": "a.py", "text": "y = 1\n"}], "cache_prompt": True}
    )
    assert plain.status_code == extra.status_code == 200, (plain.text, extra.text)
    assert extra.json()["content"] == plain.json()["content"]
