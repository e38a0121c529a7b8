"""``albor serve MODEL``: an OpenAI-compatible completions server for a GGUF, on 127.0.0.1.

    albor serve model-q4_k_m.gguf --port 8080 --threads 2

The server is llama-cpp-python's (FastAPI under uvicorn): ``POST /v1/completions`` (with ``stream``),
``GET /v1/models`` and the rest of its API. Two things are Albor's own:

- Prompts are built as Albor's model was trained: ``</s>`` then the text, with special-token text in
  the prompt (``"<s>"`` in a regex) kept as text; a completion with a ``suffix`` is a FIM infill,
  ``</s> <|fim_prefix|> prompt <|fim_suffix|> suffix <|fim_middle|>`` with the GGUF's sentinel ids.
  llama-cpp-python alone parses special-token text in prompts as control tokens, and builds a
  suffix prompt with token 0 in place of every sentinel (ALB-212, ALB-213).
- ``POST /infill``, the llama.cpp server's infill endpoint that editor plugins call:
  ``{"input_prefix", "input_suffix", "prompt", "n_predict", "temperature", "stop", ...}`` gives
  ``{"content", "tokens_predicted", "tokens_evaluated", "stop", "model"}``.

Bad requests get an HTTP error (422 for a malformed body, 400 for a prompt that does not fit the
context) and the server goes on serving.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from albor.backend import llama_cpp_module
from albor.data import tokenizer as data_tokenizer

HOST = "127.0.0.1"
COMPLETION_PATHS = ("/v1/completions", "/v1/engines/copilot-codex/completions")


def albor_prompt(tokenize: Callable[[str], list[int]], prompt: str, suffix: str | None) -> list[int]:
    """The ids Albor's model expects: ``</s>`` and the prompt, or the PSM infill prompt when ``suffix`` is given.

    ``tokenize`` encodes text with special-token strings kept as text.
    """
    if suffix is None:
        return [data_tokenizer.EOS, *tokenize(prompt)]
    return [
        data_tokenizer.EOS,
        data_tokenizer.FIM_PREFIX,
        *tokenize(prompt),
        data_tokenizer.FIM_SUFFIX,
        *tokenize(suffix),
        data_tokenizer.FIM_MIDDLE,
    ]


def albor_llama() -> type:
    """``llama_cpp.Llama`` whose completions take Albor's prompts (imported here: llama.cpp is an extra)."""
    import llama_cpp

    class AlborLlama(llama_cpp.Llama):
        """A GGUF of an Albor model in llama.cpp; text prompts become Albor's prompt ids."""

        def tokenize_text(self, text: str) -> list[int]:
            return self.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

        def create_completion(self, prompt: str | list[int], suffix: str | None = None, **kwargs: Any) -> Any:
            if isinstance(prompt, str):
                prompt, suffix = albor_prompt(self.tokenize_text, prompt, suffix), None
            # llama.cpp pads its context to a multiple of 256; the model knows only its trained positions.
            # The message is the one the server turns into a 400 naming the context length.
            trained = self.n_ctx_train()
            if len(prompt) >= trained:
                raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of {trained}")
            max_tokens = kwargs.get("max_tokens")
            if max_tokens is None or max_tokens <= 0 or len(prompt) + max_tokens > trained:
                kwargs["max_tokens"] = trained - len(prompt)
            return super().create_completion(prompt, suffix=suffix, **kwargs)

        def n_ctx_train(self) -> int:
            return llama_cpp.llama_model_n_ctx_train(self.model)

    return AlborLlama


class InfillRequest(BaseModel):
    """The body of llama.cpp's ``/infill``; fields editor plugins send beyond these are ignored."""

    model_config = ConfigDict(extra="ignore")

    input_prefix: str = Field(default="", description="the code before the cursor")
    input_suffix: str = Field(default="", description="the code after the cursor")
    prompt: str = Field(default="", description="text that follows input_prefix (the cursor's line so far)")
    n_predict: int = Field(default=128, ge=1, description="tokens to generate at most")
    temperature: float = Field(default=0.0, ge=0, description="0 is greedy")
    top_k: int = Field(default=40, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


def create_app(model: Path, threads: int | None = None, port: int = 8080) -> Any:
    """The FastAPI app: llama-cpp-python's server for ``model``, with Albor's prompts and ``/infill``."""
    if not Path(model).is_file():
        raise ValueError(f"{model}: no such GGUF file")
    llama_cpp = llama_cpp_module()
    from fastapi import APIRouter, HTTPException, Request, Response
    from fastapi.responses import JSONResponse
    from llama_cpp.server import app as server
    from llama_cpp.server.settings import ModelSettings, ServerSettings
    from llama_cpp.server.types import CreateCompletionRequest
    from starlette.concurrency import run_in_threadpool

    n_threads = threads or -1  # -1: every core (the server's own convention)
    settings = ModelSettings(
        model=str(model), n_ctx=0, n_threads=n_threads, n_threads_batch=n_threads, flash_attn=True, verbose=False
    )
    # The server's model loader builds llama_cpp.Llama; while the app is made it builds Albor's subclass.
    with mock.patch.object(llama_cpp, "Llama", albor_llama()):
        app = server.create_app(server_settings=ServerSettings(host=HOST, port=port), model_settings=[settings])

    infill = APIRouter()

    @infill.post("/infill")
    async def _infill(body: InfillRequest) -> dict[str, Any]:
        async with contextlib.asynccontextmanager(server.get_llama_proxy)() as proxy:
            llama = proxy(None)
            try:
                out = await run_in_threadpool(
                    llama.create_completion,
                    prompt=body.input_prefix + body.prompt,
                    suffix=body.input_suffix,
                    max_tokens=body.n_predict,
                    temperature=body.temperature,
                    top_k=body.top_k,
                    top_p=body.top_p,
                    seed=body.seed,
                    stop=body.stop,
                )
            except ValueError as e:  # the prompt does not fit the context
                raise HTTPException(status_code=400, detail=str(e)) from e
        choice = out["choices"][0]
        return {
            "content": choice["text"],
            "tokens_predicted": out["usage"]["completion_tokens"],
            "tokens_evaluated": out["usage"]["prompt_tokens"],
            "stop": choice["finish_reason"] == "stop",
            "model": out["model"],
        }

    app.include_router(infill)

    @app.middleware("http")
    async def _refuse_malformed(request: Request, call_next: Callable) -> Response:
        # The library's error route answers a body it cannot parse with 500 and a traceback (ALB-214).
        if request.method == "POST" and request.url.path in COMPLETION_PATHS:
            try:
                CreateCompletionRequest.model_validate_json(await request.body())
            except ValidationError as e:
                errors = [{"loc": list(err["loc"]), "msg": err["msg"]} for err in e.errors()]
                return JSONResponse({"error": {"type": "invalid_request_error", "detail": errors}}, status_code=422)
        return await call_next(request)

    return app


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path, help="a GGUF file from `albor export gguf`")
    p.add_argument("--port", type=int, default=8080, help=f"port on {HOST}")
    p.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must lie in 1..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None, prog: str = "python -m albor.serve") -> int:
    args = parse_args(argv, prog)
    try:
        app = create_app(args.model, args.threads, args.port)
        import uvicorn
    except ImportError as e:
        print(f"error: albor serve needs llama-cpp-python's server: pip install 'albor[cpu]' ({e})", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"serving {args.model} on http://{HOST}:{args.port} (/v1/completions, /infill)", flush=True)
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
