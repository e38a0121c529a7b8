"""Falsifiers for the ``serve`` contract (contracts/serve.yaml): ``albor serve`` started on a free loopback
port in its own process, driven by a real HTTP client, and stopped."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from albor import complete, serve
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


# What each started server has printed (stdout and stderr), line by line, by process id.
OUTPUT: dict[int, list[str]] = {}


def _start(model: Path, port: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "albor.serve", str(model), "--port", str(port), "--threads", "1"]
    # Its output is a pipe, block-buffered as under a service manager: what it prints must be flushed to be seen.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = OUTPUT[proc.pid] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return proc


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
            assert proc.poll() is None, "the server exited: " + "\n".join(OUTPUT[proc.pid])
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
    # An empty body is the documented defaults, each of its field's type (stop an empty list, not null).
    defaults = {name: default for name, (_, default, _, _) in INFILL_FIELDS.items()} | {"seed": None, "stop": []}
    assert serve.InfillRequest().model_dump() == defaults
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


# `albor serve`'s command line as it is documented: the summary line, each argument's help, the defaults.
SUMMARY = "``albor serve MODEL``: an OpenAI-compatible completions server for a GGUF, on 127.0.0.1."
ARGUMENT_HELP = {
    "model": "a GGUF file from `albor export gguf`",
    "--port PORT": "port on 127.0.0.1",
    "--threads THREADS": "CPU threads (default: every core)",
}
REFUSED = [
    (["--port", "0"], "--port must lie in 1..65535, got 0"),
    (["--port", "65536"], "--port must lie in 1..65535, got 65536"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
]


@pytest.mark.claim("SERVE-006")
def test_the_command_line_is_the_documented_one(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping of the help
    monkeypatch.setattr(sys, "argv", ["not-the-serve-command"])  # only the argv handed in may be read
    args = serve.parse_args(["m.gguf"], "albor serve")
    assert (type(args.model), args.model, args.port, args.threads) == (type(Path()), Path("m.gguf"), 8080, None)
    for edge in (["--port", "1", "--threads", "1"], ["--port", "65535", "--threads", "64"]):
        args = serve.parse_args(["m.gguf", *edge], "albor serve")
        assert (args.port, args.threads) == (int(edge[1]), int(edge[3])), edge
    for argv, message in REFUSED:
        with pytest.raises(SystemExit) as exit_:
            serve.parse_args(["m.gguf", *argv], "albor serve")
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("usage: albor serve "), err
        assert err.endswith(f"albor serve: error: {message}\n"), err
    with pytest.raises(SystemExit) as exit_:
        serve.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    lines = out.splitlines()
    assert lines[0] == "usage: python -m albor.serve [-h] [--port PORT] [--threads THREADS] model", out
    assert SUMMARY in lines, out
    for flag, help_ in ARGUMENT_HELP.items():
        assert re.search(rf"^  {re.escape(flag)}\s+{re.escape(help_)}$", out, re.MULTILINE), (flag, out)


# What `albor serve` may print besides its own line: llama.cpp's note that it pads the trained context.
LLAMA_CONTEXT_NOTE = re.compile(
    r"llama_context: n_ctx_seq \(256\) > n_ctx_train \(\d+\) -- possible training context overflow"
)


def _without_note(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not LLAMA_CONTEXT_NOTE.fullmatch(line.rstrip()))


@pytest.mark.claim("SERVE-007")
def test_main_hands_the_app_to_uvicorn(
    f16: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import uvicorn
    from llama_cpp.server import app as server

    served: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    assert serve.main([str(f16), "--port", "8123", "--threads", "1"]) == 0  # uvicorn.run returned: the server stopped
    out = capsys.readouterr()
    assert out.out == f"serving {f16} on http://127.0.0.1:8123 (/v1/completions, /infill)\n", out
    assert _without_note(out.err) == "", out.err
    [(app, kw)] = served
    config = uvicorn.Config(app, **kw)
    assert (config.host, config.port) == ("127.0.0.1", 8123)
    from fastapi.testclient import TestClient

    assert TestClient(app).get("/v1/models").json()["data"][0]["id"] == str(f16), "the app serves the model asked for"
    llama = server.get_llama_proxy.__globals__["_llama_proxy"](None)
    assert (llama.n_threads, llama.n_threads_batch) == (1, 1), "the threads asked for, for prompt and generation"


@pytest.mark.claim("SERVE-007")
def test_main_without_the_server_extra(
    f16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert serve.main([str(tmp_path / "none.gguf")]) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", f"error: {tmp_path / 'none.gguf'}: no such GGUF file\n"), out
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` fails as it does without the extra
    assert serve.main([str(f16)]) == 2
    out = capsys.readouterr()
    err = _without_note(out.err)
    assert out.out == "", out
    assert err.startswith("error: albor serve needs llama-cpp-python's server: pip install 'albor[cpu]' (")
    assert "uvicorn" in err and err.endswith(")\n") and err.count("\n") == 1, err


@pytest.mark.claim("SERVE-007")
def test_the_server_prints_one_line(f16: Path, server: tuple[str, subprocess.Popen[str]]) -> None:
    import httpx

    url, proc = server
    port = url.rsplit(":", 1)[1]
    assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 200
    assert _post(url, "/infill", {"input_prefix": "x = ", "n_predict": 2}).status_code == 200
    want = f"serving {f16} on http://127.0.0.1:{port} (/v1/completions, /infill)"
    lines = OUTPUT[proc.pid]
    deadline = time.monotonic() + 10  # the line is flushed before the server starts; this is only the pipe's delay
    while want not in lines and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # an access log line, if one were written, has reached the pipe
    assert [line for line in lines if not LLAMA_CONTEXT_NOTE.fullmatch(line)] == [want], lines


@pytest.fixture(scope="module")
def app(f16: Path) -> Any:
    """The app ``albor serve`` serves, made in this process (no --threads), and a client that calls it in place."""
    from fastapi.testclient import TestClient

    return TestClient(serve.create_app(f16))


@pytest.mark.claim("SERVE-008")
def test_the_model_is_loaded_as_the_server_needs(f16: Path, backend: LlamaCppBackend) -> None:
    import llama_cpp
    from llama_cpp.server import app as server

    proxy = server.get_llama_proxy.__globals__
    for threads, want in ((None, multiprocessing.cpu_count()), (1, 1)):
        serve.create_app(f16, threads)
        llama = proxy["_llama_proxy"](None)
        assert (llama.n_threads, llama.n_threads_batch) == (want, want), threads
        # The GGUF's own context (n_ctx 0), which llama.cpp pads to a multiple of 256; not the library's 2048.
        assert llama.n_ctx() == 256 and llama.n_ctx_train() == backend.max_seq_len < 256
        assert llama.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        assert llama.verbose is False


INFILL_DEFAULTS = {"temperature": 0.0, "top_k": 40, "top_p": 0.95, "seed": None, "stop": []}


@pytest.mark.claim("SERVE-009")
def test_infill_hands_its_sampling_on(app: Any) -> None:
    model = app.get("/v1/models").json()["data"][0]["id"]

    def both(**sampling: Any) -> dict[str, Any]:
        r = app.post("/infill", json={"input_prefix": FIM[0], "input_suffix": FIM[1], "n_predict": 16, **sampling})
        assert r.status_code == 200, r.text
        got = r.json()
        assert set(got) == {"content", "tokens_predicted", "tokens_evaluated", "stop", "model"}, got
        # The reference: llama-cpp-python's own completion route, asked for the same infill.
        body = {"prompt": FIM[0], "suffix": FIM[1], "max_tokens": 16, "repeat_penalty": 1.0}
        ref = app.post("/v1/completions", json=body | INFILL_DEFAULTS | sampling).json()
        choice = ref["choices"][0]
        assert got == {
            "content": choice["text"],
            "tokens_predicted": ref["usage"]["completion_tokens"],
            "tokens_evaluated": ref["usage"]["prompt_tokens"],
            "stop": choice["finish_reason"] == "stop",
            "model": model,
        }, (sampling, got, ref)
        return got

    greedy = both()
    assert greedy["stop"] is False and greedy["tokens_predicted"] >= 16, "n_predict, not a stop, ended it"
    one, two = both(temperature=5.0, seed=1), both(temperature=5.0, seed=2)
    assert one["content"] != two["content"] and one["content"] != greedy["content"], "a sample depends on its seed"
    assert both(temperature=5.0, seed=1, top_k=1)["content"] == greedy["content"]
    assert both(temperature=5.0, seed=1, top_p=1e-6)["content"] == greedy["content"]
    stop = greedy["content"][4:6]
    stopped = both(stop=[stop])
    assert stopped["stop"] is True and stopped["content"] == greedy["content"][: greedy["content"].index(stop)]


def _text_of(backend: LlamaCppBackend, n: int) -> str:
    """A text whose Albor prompt (</s> and its ids) is ``n`` ids long."""
    for k in range(64):
        for j in range(64):
            text = "x = 1\n" * k + "y" * j
            if len(encode(backend.tokenizer, text)) == n:
                return text
    raise AssertionError(f"no text of {n} ids")


@pytest.mark.claim("SERVE-010")
def test_completions_stay_in_the_trained_context(app: Any, backend: LlamaCppBackend) -> None:
    trained = backend.max_seq_len
    r = app.post("/v1/completions", json={"prompt": _text_of(backend, trained), "max_tokens": 1})
    assert r.status_code == 400 and f"maximum context length is {trained} tokens" in r.text, r.text
    no_eos = {"logit_bias": {"2": -100.0}, "temperature": 0}  # every completion runs to its length

    def completed(n_prompt: int, max_tokens: int | None) -> int:
        body = {"prompt": _text_of(backend, n_prompt), "max_tokens": max_tokens, **no_eos}
        r = app.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["usage"]["prompt_tokens"] == n_prompt and out["choices"][0]["finish_reason"] == "length", out
        return out["usage"]["completion_tokens"]

    assert completed(trained - 1, 1000) == 1
    rest = trained - 10
    for max_tokens, want in [(None, rest), (0, rest), (1, 1), (rest - 1, rest - 1), (rest + 1, rest), (1000, rest)]:
        assert completed(10, max_tokens) == want, max_tokens


@pytest.mark.claim("SERVE-011")
def test_malformed_bodies_name_the_field(app: Any) -> None:
    from pydantic import TypeAdapter, ValidationError

    with pytest.raises(ValidationError) as not_int:
        TypeAdapter(int).validate_python("many")
    for path in ("/v1/completions", "/v1/engines/copilot-codex/completions"):
        r = app.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        [error] = r.json()["error"]["detail"]
        assert r.json()["error"]["type"] == "invalid_request_error" and error["loc"] == [], r.text
        assert error["msg"].startswith("Invalid JSON"), r.text
        r = app.post(path, json={"prompt": "x", "max_tokens": "many"})
        want = {
            "type": "invalid_request_error",
            "detail": [{"loc": ["max_tokens"], "msg": not_int.value.errors()[0]["msg"]}],
        }
        assert (r.status_code, r.json()) == (422, {"error": want}), (path, r.text)
    # The completion check is for the completion routes: /infill ignores what it does not know.
    r = app.post("/infill", json={"input_prefix": "x = ", "n_predict": 2, "max_tokens": "many"})
    assert r.status_code == 200, r.text
