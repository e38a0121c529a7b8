"""Falsifiers for the ``backend`` contract (contracts/backend.yaml): CPU completion through Albor's torch
decoder and through llama.cpp, from the command line and from one loaded backend."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from albor import complete, serve
from albor.backend import LlamaCppBackend, TorchBackend, gguf_tokenizer, open_backend
from albor.data import tokenizer as data_tokenizer
from albor.generate import Sampling, encode, fim_prompt, load, stream_text
from albor.ladder.model_card import measure_gguf
from falsification.exports import PROMPTS, SOURCES, need

FIM = ("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")


@pytest.fixture(scope="module")
def f16(random_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("gguf")
    need("llama_cpp")
    from albor.export.export_gguf import export_gguf

    return export_gguf(random_run, tmp_path_factory.mktemp("gguf") / "model-f16.gguf", "f16")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert complete.main(["--max-new-tokens", "64", "--device", "cpu", *args]) == 0
    return capsys.readouterr().out.removesuffix("\n")


@pytest.mark.claim("BACKEND-001")
def test_torch_backend_is_the_float32_path(random_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inference = load(random_run, "cpu")
    model, tok = inference.model, inference.tokenizer
    backend = TorchBackend(random_run)
    for prompt in PROMPTS[:2]:
        want = "".join(stream_text(model, tok, encode(tok, prompt), 64))
        assert "".join(complete.completion(backend, prompt, max_new_tokens=64)) == want
        assert _cli(capsys, "--checkpoint", str(random_run), prompt) == want
    ids = fim_prompt(tok, *FIM, 32, model.cfg.max_seq_len)
    want = "".join(stream_text(model, tok, ids, 32))
    assert "".join(complete.completion(backend, prefix=FIM[0], suffix=FIM[1], max_new_tokens=32)) == want
    full = "".join(stream_text(model, tok, encode(tok, PROMPTS[0]), 64))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    want = "".join(stream_text(model, tok, encode(tok, PROMPTS[0]), 64, [stop]))
    assert "".join(complete.completion(backend, PROMPTS[0], max_new_tokens=64, stop=[stop])) == want


@pytest.mark.slow
@pytest.mark.claim("BACKEND-002")
def test_llama_cpp_backend_completes_like_torch(
    random_run: Path, f16: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch_backend = TorchBackend(random_run)
    for prompt in PROMPTS:
        want = "".join(complete.completion(torch_backend, prompt, max_new_tokens=64))
        got = _cli(capsys, "--backend", "llama.cpp", "--checkpoint", str(f16), "--threads", "1", prompt)
        assert got == want, prompt
    want = "".join(complete.completion(torch_backend, prefix=FIM[0], suffix=FIM[1], max_new_tokens=64))
    got = _cli(capsys, "--backend", "llama.cpp", "--checkpoint", str(f16), "--prefix", FIM[0], "--suffix", FIM[1])
    assert got == want
    stop = want[len(want) // 2 : len(want) // 2 + 2]
    got = _cli(
        capsys,
        "--backend",
        "llama.cpp",
        "--checkpoint",
        str(f16),
        "--prefix",
        FIM[0],
        "--suffix",
        FIM[1],
        "--stop",
        stop,
    )
    assert got == want[: want.index(stop)]


@pytest.mark.slow
@pytest.mark.claim("BACKEND-003")
def test_one_load_serves_many_completions(random_run: Path, f16: Path) -> None:
    sampled = Sampling(temperature=0.8, top_k=50, seed=7)
    calls = [
        {"prompt": PROMPTS[0]},
        {"prefix": FIM[0], "suffix": FIM[1]},
        {"prompt": PROMPTS[2], "sampling": sampled},
        {"prompt": PROMPTS[0]},
    ]
    for make in (
        lambda: TorchBackend(random_run),
        lambda: TorchBackend(random_run, "int8"),
        lambda: LlamaCppBackend(f16),
    ):
        backend = make()
        for kwargs in calls:
            again = "".join(complete.completion(backend, max_new_tokens=40, **kwargs))
            fresh = "".join(complete.completion(make(), max_new_tokens=40, **kwargs))
            assert again == fresh, (type(backend).__name__, kwargs)


@pytest.mark.claim("BACKEND-004")
def test_gguf_tokenizer_is_the_checkpoints(random_run: Path, f16: Path) -> None:
    ours, rebuilt = load(random_run, "cpu").tokenizer, gguf_tokenizer(f16)
    assert rebuilt.get_vocab(with_added_tokens=True) == ours.get_vocab(with_added_tokens=True)
    for text in SOURCES:
        ids = data_tokenizer.encode(ours, text)
        assert data_tokenizer.encode(rebuilt, text) == ids, repr(text)
        assert data_tokenizer.decode(rebuilt, ids) == text
    assert [rebuilt.token_to_id(t) for t in data_tokenizer.SPECIAL_TOKENS] == list(range(data_tokenizer.N_SPECIAL))


@pytest.mark.claim("BACKEND-005")
def test_threads_and_errors(random_run: Path, f16: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        TorchBackend(random_run, threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    llm = LlamaCppBackend(f16, threads=1).llm
    assert (llm.context_params.n_threads, llm.context_params.n_threads_batch) == (1, 1)
    with pytest.raises(ValueError, match="--quant"):
        open_backend("llama.cpp", f16, "int8")
    missing = tmp_path / "missing.gguf"
    assert complete.main(["--backend", "llama.cpp", "--checkpoint", str(missing), "x"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert complete.main(["--checkpoint", str(tmp_path / "no-run"), "x"]) == 2
    assert "no-run" in capsys.readouterr().err


@pytest.mark.claim("BACKEND-006")
def test_llama_cpp_context_is_the_trained_one(random_run: Path, f16: Path) -> None:
    trained = load(random_run, "cpu").model_config.max_seq_len
    backend = LlamaCppBackend(f16)
    assert backend.max_seq_len == trained < backend.llm.n_ctx()
    prompt = "x = 1\n" * trained
    with pytest.warns(UserWarning, match="truncated"):
        text = "".join(complete.completion(backend, prompt, max_new_tokens=8))
    assert backend.llm.n_tokens <= trained and text


# The decode of BACKEND-007, in a process of its own: a build whose matmul crashes takes that process
# down, not the battery's.
DECODE = """
import sys
import numpy as np
from albor.backend import llama_cpp_module
llm = llama_cpp_module().Llama(model_path=sys.argv[1], n_ctx=0, n_threads=1, logits_all=True, verbose=False)
ids = [7 + i % 50 for i in range(int(sys.argv[2]))]
llm.eval(ids)
print(float(np.abs(np.array(llm.scores[: len(ids)], dtype=np.float64)).sum()))
"""


@pytest.mark.claim("BACKEND-007")
@pytest.mark.parametrize("kind", ["q8_0", "q4_k_m"])
def test_the_installed_llama_cpp_decodes_quantised_weights(random_run: Path, tmp_path: Path, kind: str) -> None:
    from albor.export.export_gguf import export_gguf

    need("gguf")
    need("llama_cpp")
    path = export_gguf(random_run, tmp_path / f"model-{kind}.gguf", kind)
    n = load(random_run, "cpu").model_config.max_seq_len
    proc = subprocess.run(
        [sys.executable, "-c", DECODE, str(path), str(n)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, (
        f"llama.cpp's decode of a {kind} GGUF ended with status {proc.returncode}: " + (proc.stderr[-2000:])
    )
    total = float(proc.stdout.split()[-1])
    assert math.isfinite(total) and total > 0, proc.stdout


@pytest.mark.claim("BACKEND-008")
def test_a_llama_cpp_build_with_amx_kernels_is_refused(
    random_run: Path, f16: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import llama_cpp

    library = str(Path(llama_cpp.__file__).parent)
    amx = b"CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 | "
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: amx)
    for load_gguf in (LlamaCppBackend, serve.create_app):
        with pytest.raises(ValueError, match="AMX") as refused:
            load_gguf(f16)
        for named in (library, "cmake/llama-cpp.cmake", "--no-cache-dir --force-reinstall"):
            assert named in str(refused.value), (named, refused.value)
    with pytest.raises(ValueError, match="AMX"):
        measure_gguf(f16, random_run)
    assert complete.main(["--backend", "llama.cpp", "--checkpoint", str(f16), "x"]) == 2
    assert library in capsys.readouterr().err


@pytest.mark.claim("BACKEND-009")
def test_the_cli_hands_every_flag_on(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, object] = {}
    backend = object()

    def opened(*args: object) -> object:
        seen["open"] = args
        return backend

    def completed(*args: object) -> list[str]:
        seen["completion"] = args
        return ["done"]

    monkeypatch.setattr(complete, "open_backend", opened)
    monkeypatch.setattr(complete, "completion", completed)
    # The defaults: torch, no quantisation, the torch default device, 128 new tokens, greedy, no stop.
    assert complete.main(["--checkpoint", "run", "x"]) == 0
    assert seen["open"] == ("torch", Path("run"), "none", None, complete.default_device())
    assert seen["completion"] == (backend, "x", None, None, 128, [], Sampling())
    assert capsys.readouterr().out.startswith("done")
    flags = ["--checkpoint", "m.gguf", "--backend", "llama.cpp", "--quant", "int8", "--threads", "3", "--device", "cpu",
             "--max-new-tokens", "7", "--temperature", "0.5", "--top-k", "4", "--top-p", "0.75", "--seed", "9",
             "--stop", "\n\n", "--stop", "def ", "--suffix", "tail"]  # fmt: skip
    assert complete.main(flags) == 0
    assert seen["open"] == ("llama.cpp", Path("m.gguf"), "int8", 3, "cpu")
    assert seen["completion"] == (backend, None, None, "tail", 7, ["\n\n", "def "], Sampling(0.5, 4, 0.75, 9))
    capsys.readouterr()
    # Refused by the parser, its usage naming the command: a prompt and a hole, neither, threads below 1,
    # no checkpoint, and a backend or quantisation it does not offer.
    for argv, message in (
        (["--checkpoint", "r", "x", "--prefix", "p"], "give either a prompt or --prefix/--suffix"),
        (["--checkpoint", "r"], "give either a prompt or --prefix/--suffix"),
        (["--checkpoint", "r", "--threads", "0", "x"], "--threads must be >= 1, got 0"),
        (["x"], "the following arguments are required: --checkpoint"),
        (["--checkpoint", "r", "--backend", "onnx", "x"], "invalid choice: 'onnx'"),
        (["--checkpoint", "r", "--quant", "int2", "x"], "invalid choice: 'int2'"),
    ):
        with pytest.raises(SystemExit) as e:
            complete.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("usage: python -m albor.complete ") and message in err, err


@pytest.mark.claim("BACKEND-010")
def test_the_clis_help_documents_every_option(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import argparse

    made: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_args

    def recorded(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        made.append(self)
        return parse(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recorded)
    with pytest.raises(SystemExit) as e:
        complete.parse_args(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: python -m albor.complete [-h] "), out
    assert "stream a completion to the terminal, from a checkpoint or a GGUF" in " ".join(out.split()), out
    parser = made[0]
    bare = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not bare, f"options that --help leaves unexplained: {bare}"
    # The refusal of a prompt together with a hole (or of neither) says what to give, on its own line.
    for argv in (["--checkpoint", "r", "x", "--suffix", "s"], ["--checkpoint", "r"]):
        with pytest.raises(SystemExit):
            complete.parse_args(argv)
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last == "python -m albor.complete: error: give either a prompt or --prefix/--suffix", last


@pytest.mark.claim("BACKEND-011")
def test_the_backends_take_the_settings_they_are_given(
    random_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from albor import backend as backend_module
    from albor.export.quantize import Int4Linear, Int8Linear

    # --quant int8 and int4 replace the linears by 8-bit twins, and by 4-bit ones in groups of 32; none by neither.
    for quant, kind in (("int8", Int8Linear), ("int4", Int4Linear), ("none", None)):
        layers = [m for m in open_backend("torch", random_run, quant).model.modules()
                  if isinstance(m, (Int8Linear, Int4Linear))]  # fmt: skip
        assert (bool(layers), {type(m) for m in layers}) == ((True, {kind}) if kind else (False, set())), quant
        assert kind is not Int4Linear or {m.group_size for m in layers} == {32}
    with pytest.raises(ValueError, match=r"^--quant int4 runs on the CPU only, not on meta$"):
        TorchBackend(random_run, "int4", device="meta")
    # open_backend hands every setting on, with the defaults none, no thread count and the CPU.
    seen: list[tuple] = []
    monkeypatch.setattr(backend_module, "TorchBackend", lambda *a: seen.append(("torch", *a)))
    monkeypatch.setattr(backend_module, "LlamaCppBackend", lambda *a: seen.append(("llama.cpp", *a)))
    open_backend("torch", Path("r"))
    open_backend("torch", Path("r"), "int8", 3, "cuda:1")
    open_backend("llama.cpp", Path("m.gguf"), threads=5)
    assert seen == [("torch", Path("r"), "none", None, "cpu"), ("torch", Path("r"), "int8", 3, "cuda:1"),
                    ("llama.cpp", Path("m.gguf"), 5)]  # fmt: skip
    # completion hands on its sampling, 128 new tokens by default, and an absent side of a hole as empty.
    calls: dict[str, tuple] = {}
    monkeypatch.setattr(complete, "fim_prompt", lambda *a: calls.setdefault("fim", a) and [1])
    monkeypatch.setattr(complete, "encode", lambda *a: [2])
    monkeypatch.setattr(complete, "stream_text", lambda *a: calls.setdefault("stream", a) and iter(["y"]))

    class Loaded:
        tokenizer, max_seq_len = "tok", 9

    loaded, sampling = Loaded(), Sampling(0.7, 3, 0.9, 11)
    complete.completion(loaded, "x", sampling=sampling)  # type: ignore[arg-type]
    assert calls.pop("stream") == (loaded, "tok", [2], 128, (), sampling)
    for prefix, suffix, want in ((None, "s", ("", "s")), ("p", None, ("p", ""))):
        complete.completion(loaded, prefix=prefix, suffix=suffix)  # type: ignore[arg-type]
        assert calls.pop("fim") == ("tok", *want, 128, 9)
        assert calls.pop("stream")[3:] == (128, (), None)
    # main names the command it was called as, and prints a warning as one "warning: ..." line.
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main sets it; put it back after
    with pytest.raises(SystemExit):
        complete.main(["--checkpoint", "r"], prog="albor complete")
    assert capsys.readouterr().err.startswith("usage: albor complete ")

    def warned(*_a: object) -> list[str]:
        warnings.warn("the prompt was cut", stacklevel=1)
        return ["z"]

    monkeypatch.setattr(complete, "open_backend", lambda *a: loaded)
    monkeypatch.setattr(complete, "completion", warned)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # Shown as Python shows a warning by default (pytest's own capture is what catch_warnings restores).
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line)
        )
        assert complete.main(["--checkpoint", "r", "x"]) == 0
    assert "warning: the prompt was cut\n" in capsys.readouterr().err
    # Run as a module it exits with main's status.
    run = subprocess.run([sys.executable, "-m", "albor.complete", "--checkpoint", str(tmp_path / "none"), "x"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 2 and run.stderr.startswith("error: "), run.stderr
