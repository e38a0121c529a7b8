"""Falsifiers for the ``export_gguf`` contract (contracts/export_gguf.yaml): GGUF files of Albor models,
read back through llama-cpp-python and compared with Albor's own decoder and tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from albor.backend import llama_cpp_module
from albor.data import load_windows
from albor.data import tokenizer as data_tokenizer
from albor.export import export_gguf as gg
from albor.export.compare import decoder_logits, window_perplexity
from albor.export.staging import ExportError
from albor.generate import encode, generate, load
from albor.ops import apply_rope, rope_tables
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err
from falsification.exports import PROMPTS, RANDOM, SOURCES, code_tokenizer, need, random_decoder

if TYPE_CHECKING:
    from llama_cpp import Llama


@pytest.fixture(scope="module", autouse=True)
def _needs_llama_cpp() -> None:
    need("gguf")
    need("llama_cpp")


def _llama(path: Path, logits_all: bool = False, verbose: bool = False) -> Llama:
    return llama_cpp_module().Llama(model_path=str(path), n_ctx=0, n_threads=1, logits_all=logits_all, verbose=verbose)


@pytest.fixture(scope="module")
def f16(random_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gg.export_gguf(random_run, tmp_path_factory.mktemp("gguf") / "model-f16.gguf", "f16")


def _llama_logits(llm: Llama, ids: list[int]) -> torch.Tensor:
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))


@pytest.mark.claim("GGUF-001")
def test_f16_logits_match_albor(random_run: Path, f16: Path) -> None:
    model = load(random_run, "cpu").model
    n = model.cfg.max_seq_len
    ids = torch.randint(7, model.cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(3)).tolist()
    got = _llama_logits(_llama(f16, logits_all=True), ids)
    with torch.no_grad():
        want = model(torch.tensor([ids]))[0]
    tol = tolerance("GGUF-001", torch.float16)
    for start in range(0, n, 16):  # each stretch of positions on its own, so a late RoPE error shows
        err = rel_err(got[start : start + 16], want[start : start + 16])
        assert err <= tol, f"positions {start}..{start + 15}: rel err {err:.3g} > {tol}"


@pytest.mark.claim("GGUF-002")
def test_f16_greedy_tokens_agree(random_run: Path, f16: Path) -> None:
    inference = load(random_run, "cpu")
    llm = _llama(f16)
    for prompt in PROMPTS:
        ids = encode(inference.tokenizer, prompt)
        ours = list(generate(inference.model, ids, 64, eos_id=None))
        llm.reset()
        theirs = []
        for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            theirs.append(token)
            if len(theirs) == 64:
                break
        # Albor's logits along llama.cpp's tokens: how far each token llama.cpp took is below Albor's best.
        with torch.no_grad():
            logits = inference.model(torch.tensor([ids + theirs]))[0, len(ids) - 1 : -1].double()
        best = logits.topk(2).values
        behind = best[:, 0] - logits.gather(1, torch.tensor(theirs)[:, None])[:, 0]
        # Twice the largest difference GGUF-001 admits for one logit: two logits nearer than that may swap.
        near = 2 * tolerance("GGUF-001", torch.float16) * logits.abs().amax(dim=1)
        worst = int((behind - near).argmax())
        assert behind[worst] <= near[worst], (
            f"{prompt!r} step {worst}: llama.cpp took token {theirs[worst]}, {behind[worst]:.4f} below Albor's best "
            f"logit (a near-tie is within {near[worst]:.4f})"
        )
        tie = next((i for i in range(len(theirs)) if best[i, 0] - best[i, 1] <= near[i]), len(theirs))
        assert len(theirs) == 64 and ours[:tie] == theirs[:tie], (
            f"{prompt!r}: Albor's greedy tokens part from llama.cpp's at step {_first_difference(theirs, ours)}, "
            f"before the first near-tie (step {tie})"
        )


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _adjacent_pair_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """llama.cpp's rotation for the ``llama`` architecture: pairs (x[2i], x[2i + 1]), on (T, D) rows."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    return out


@pytest.mark.claim("GGUF-003")
def test_rotary_permutation() -> None:
    g = torch.Generator().manual_seed(0)
    n_heads, hd, d, t = 3, 8, 12, 9
    wq, wk = torch.randn(n_heads * hd, d, generator=g, dtype=torch.float64), torch.randn(hd, d, dtype=torch.float64)
    x = torch.randn(t, d, generator=g, dtype=torch.float64)
    cos, sin = rope_tables(torch.arange(t), hd, dtype=torch.float64)
    q = (x @ wq.t()).view(t, n_heads, hd)
    k = (x @ wk.t()).view(t, 1, hd)
    q_albor, k_albor = apply_rope(q[None], k[None], cos, sin)
    q_perm = (x @ gg.permute_rotary(wq, n_heads).t()).view(t, n_heads, hd)
    k_perm = (x @ gg.permute_rotary(wk, 1).t()).view(t, 1, hd)
    q_cpp = _adjacent_pair_rope(q_perm, cos[:, None], sin[:, None])
    k_cpp = _adjacent_pair_rope(k_perm, cos[:, None], sin[:, None])
    tol = tolerance("GGUF-003", torch.float64)
    interleave = torch.arange(hd).view(2, hd // 2).t().reshape(-1)  # adjacent position 2i+j holds i + j·hd/2
    assert rel_err(q_cpp, q_albor[0][..., interleave]) <= tol
    scores_albor = torch.einsum("thd,shd->hts", q_albor[0], k_albor[0].expand(-1, n_heads, -1))
    scores_cpp = torch.einsum("thd,shd->hts", q_cpp, k_cpp.expand(-1, n_heads, -1))
    assert rel_err(scores_cpp, scores_albor) <= tol
    unpermuted = _adjacent_pair_rope(q, cos[:, None], sin[:, None])
    k_unpermuted = _adjacent_pair_rope(k, cos[:, None], sin[:, None])
    wrong = torch.einsum("thd,shd->hts", unpermuted, k_unpermuted.expand(-1, n_heads, -1))
    assert rel_err(wrong, scores_albor) > 1e-3, "the check cannot tell the two pairings apart"


@pytest.mark.claim("GGUF-009")
def test_hyperparameters_as_llama_cpp_reads_them(random_run: Path, f16: Path) -> None:
    cfg = load(random_run, "cpu").model.cfg
    meta = _llama(f16).metadata  # llama.cpp's own reading of the file's keys, as text
    want = {
        "context_length": cfg.max_seq_len,
        "embedding_length": cfg.d_model,
        "block_count": cfg.n_layers,
        "feed_forward_length": cfg.d_ff,
        "attention.head_count": cfg.n_heads,
        "attention.head_count_kv": cfg.n_kv_heads,
        "rope.dimension_count": cfg.head_dim,
        "rope.freq_base": cfg.rope_theta,
        "attention.layer_norm_rms_epsilon": cfg.norm_eps,
        "vocab_size": cfg.vocab_size,
    }
    # llama.cpp prints a float with six decimals.
    got = {k: float(meta[f"llama.{k}"]) for k in want}
    assert got == {k: pytest.approx(v, abs=5e-7) for k, v in want.items()}
    assert meta["general.architecture"] == "llama"


@pytest.mark.claim("GGUF-004")
def test_tokenizer_matches_albor(random_run: Path, f16: Path) -> None:
    from gguf import GGUFReader, TokenType

    tokenizer = load(random_run, "cpu").tokenizer
    llm = _llama(f16)
    for text in SOURCES:
        ids = data_tokenizer.encode(tokenizer, text)
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids, repr(text)
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == encode(tokenizer, text), repr(text)
        assert llm.detokenize(ids).decode() == text, repr(text)
    assert (llm.token_bos(), llm.token_eos()) == (data_tokenizer.EOS, data_tokenizer.EOS)
    reader = GGUFReader(str(f16))

    def field(key: str) -> Any:
        return reader.get_field(key).contents()

    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == gg.PRE_TOKENIZER
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert tokens[: data_tokenizer.N_SPECIAL] == list(data_tokenizer.SPECIAL_TOKENS)
    assert set(types[: data_tokenizer.N_SPECIAL]) == {TokenType.CONTROL}
    n = tokenizer.get_vocab_size()
    assert set(types[data_tokenizer.N_SPECIAL : n]) == {TokenType.NORMAL} and set(types[n:]) == {TokenType.UNUSED}
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    assert field("tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    ids = {
        "unknown": data_tokenizer.UNK,
        "padding": data_tokenizer.PAD,
        "fim_pre": data_tokenizer.FIM_PREFIX,
        "fim_suf": data_tokenizer.FIM_SUFFIX,
        "fim_mid": data_tokenizer.FIM_MIDDLE,
    }
    for name, want in ids.items():
        assert field(f"tokenizer.ggml.{name}_token_id") == want, name
    assert field("tokenizer.ggml.add_bos_token") is True and field("tokenizer.ggml.add_eos_token") is False


@pytest.mark.claim("GGUF-005")
def test_pre_tokenizer_loads_without_degradation(
    random_run: Path, f16: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    warning = "GENERATION QUALITY WILL BE DEGRADED"
    _llama(f16, verbose=True)
    log = capsys.readouterr().err
    assert "init_tokenizer" in log, "llama.cpp's load log was not captured"
    assert warning not in log and "missing pre-tokenizer" not in log
    monkeypatch.setattr(gg, "PRE_TOKENIZER", "")
    _llama(gg.export_gguf(random_run, tmp_path / "empty-pre.gguf", "f16"), verbose=True)
    assert warning in capsys.readouterr().err, "an empty pre-tokenizer name no longer warns: the check is blind"


@pytest.mark.slow
@pytest.mark.claim("GGUF-006")
def test_quantised_perplexity_bounds(trained_run: Path, small_data: Path, tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType, GGUFReader

    windows = load_windows(small_data, "val")
    ppl = {"albor": window_perplexity(decoder_logits(load(trained_run, "cpu").model), windows).ppl}
    for kind in gg.TYPES:
        path = gg.export_gguf(trained_run, tmp_path / f"model-{kind}.gguf", kind)
        llm = _llama(path, logits_all=True)
        ppl[kind] = window_perplexity(lambda ids, llm=llm: _llama_logits(llm, ids), windows).ppl
        if kind == "q4_k_m":
            types = {t.tensor_type for t in GGUFReader(str(path)).tensors if len(t.shape) == 2}
            assert types <= {GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K}, types
            assert GGMLQuantizationType.Q4_K in types
    assert ppl["albor"] < 100, f"the model is not trained: val ppl {ppl['albor']:.1f}"
    assert ppl["f16"] / ppl["albor"] <= tolerance("GGUF-006", "f16"), ppl
    for kind in ("q8_0", "q4_k_m"):
        ratio = ppl[kind] / ppl["f16"]
        assert ratio <= tolerance("GGUF-006", kind), f"{kind}: ppl {ppl[kind]:.3f} is {ratio:.4f}× the F16 file's"


@pytest.mark.claim("GGUF-007")
def test_export_refuses_and_leaves_nothing(
    random_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from albor.export.__main__ import main

    out = tmp_path / "model.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(ExportError, match=str(out)):
        gg.export_gguf(random_run, out, "q8_0")
    assert out.read_bytes() == b"precious"
    assert main(["gguf", str(random_run), str(out), "--type", "f16"]) == 2
    assert str(out) in capsys.readouterr().err
    assert main(["gguf", str(tmp_path / "no-such-run"), str(tmp_path / "a.gguf")]) == 2
    assert "no-such-run" in capsys.readouterr().err
    fresh = tmp_path / "b.gguf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gg, "quantize_q4_k_m", lambda *a, **k: (_ for _ in ()).throw(ExportError("quantiser failed")))
        with pytest.raises(ExportError, match="quantiser failed"):
            gg.export_gguf(random_run, fresh, "q4_k_m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"], "a failed export left files behind"


@pytest.mark.slow
@pytest.mark.claim("GGUF-008")
@pytest.mark.parametrize("preset", ["tiny", "50m", "125m", "350m"])
def test_every_preset_shape_exports(preset: str, tmp_path: Path) -> None:
    from albor.config import load_model_config
    from falsification.exports import code_tokenizer, random_decoder, save_run

    cfg = load_model_config(preset).model_copy(update={"n_layers": 1, "vocab_size": 520, "max_seq_len": 32})
    run = save_run(tmp_path, random_decoder(cfg, std=0.02), code_tokenizer())
    model = load(run, "cpu").model
    ids = torch.randint(7, cfg.vocab_size, (cfg.max_seq_len,), generator=torch.Generator().manual_seed(5)).tolist()
    with torch.no_grad():
        want = model(torch.tensor([ids]))[0]
    got = _llama_logits(_llama(gg.export_gguf(run, tmp_path / "m.gguf", "q8_0"), logits_all=True), ids)
    assert rel_err(got, want) <= tolerance("GGUF-008", "q8_0")


@pytest.mark.claim("GGUF-010")
def test_each_plain_type_stores_what_its_name_says(random_run: Path, tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader, LlamaFileType

    # A feed-forward width of 80: the down projection's rows (80 long) are no whole number of Q8_0 blocks.
    model = random_decoder(RANDOM.model_copy(update={"d_ff": 80}))
    shapes = {name: data.shape for name, data in gg.gguf_tensors(model)}
    assert any(len(sh) == 2 and sh[-1] % 32 for sh in shapes.values()), "no row for the Q8_0 fallback"
    files = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}
    for kind, file_type in files.items():
        path = tmp_path / f"{kind}.gguf"
        gg.write_plain(model, code_tokenizer(), path, kind)  # type: ignore[arg-type]
        reader = GGUFReader(str(path))

        def field(key: str, reader: GGUFReader = reader) -> Any:
            return reader.fields[key].contents()

        assert field("general.file_type") == int(file_type), kind
        assert (field("general.name"), field("tokenizer.ggml.add_eos_token")) == (RANDOM.name, False)
        for t in reader.tensors:
            sh = shapes[t.name]
            want = (
                Q.F32 if len(sh) == 1 or kind == "f32"
                else Q.Q8_0 if kind == "q8_0" and sh[-1] % 32 == 0
                else Q.F16
            )  # fmt: skip
            assert t.tensor_type == want, f"{kind}: {t.name} {sh} is {t.tensor_type.name}, not {want.name}"
        assert {t.name for t in reader.tensors} == set(shapes)
    for kind, file_type in files.items():
        if kind != "f32":  # the export's own types go through export_gguf
            path = gg.export_gguf(random_run, tmp_path / f"exported-{kind}.gguf", kind)  # type: ignore[arg-type]
            assert GGUFReader(str(path)).fields["general.file_type"].contents() == int(file_type), kind


@pytest.mark.claim("GGUF-013")
def test_the_tensors_written_are_the_float32_values_on_the_cpu(device: torch.device) -> None:
    model = random_decoder()
    want = dict(gg.gguf_tensors(model))
    assert all(a.dtype == np.float32 for a in want.values())
    half = random_decoder().to(device, torch.bfloat16)
    for name, got in gg.gguf_tensors(half):
        assert got.dtype == np.float32, name
        ref = torch.from_numpy(want[name]).to(torch.bfloat16).float().numpy()
        assert np.array_equal(got, ref), f"{name}: not the bf16 model's values in float32"


@pytest.mark.claim("GGUF-011")
def test_a_q4_k_m_export_quantises_a_float32_file_made_beside_out(random_run: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader, LlamaFileType

    out = tmp_path / "model-q4.gguf"
    sources: list[tuple[Path, int]] = []
    real = gg.quantize_q4_k_m

    def watched(source: Path, dest: Path, *args: Any, **kwargs: Any) -> None:
        sources.append((source, GGUFReader(str(source)).fields["general.file_type"].contents()))
        assert source.parent.parent == out.parent and source.parent.name.startswith(f".tmp-{out.name}."), source
        real(source, dest, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gg, "quantize_q4_k_m", watched)
        gg.export_gguf(random_run, out, "q4_k_m")
    assert [kind for _, kind in sources] == [int(LlamaFileType.ALL_F32)], "the quantiser's source is no float32 GGUF"
    assert not sources[0][0].exists() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    reader = GGUFReader(str(out))
    assert reader.fields["general.file_type"].contents() == int(LlamaFileType.MOSTLY_Q4_K_M)
    model = load(random_run, "cpu")
    assert {t.name for t in reader.tensors} == {name for name, _ in gg.gguf_tensors(model.model)}
    tokens, _, _ = gg.vocabulary(model.tokenizer, model.model.cfg.vocab_size)
    assert reader.fields["tokenizer.ggml.tokens"].contents() == tokens


class _Vocab:
    """A stand-in tokenizer of the given id map and model type, for the refusals of ``vocabulary``."""

    def __init__(self, ids: dict[str, int], kind: str = "BPE", merges: list[str] | None = None) -> None:
        self.ids, self.kind, self.merges = ids, kind, merges or []

    def get_vocab(self, with_added_tokens: bool) -> dict[str, int]:
        return self.ids if with_added_tokens else {t: i for t, i in self.ids.items() if i >= 2}

    def to_str(self) -> str:
        return json.dumps({"model": {"type": self.kind, "merges": self.merges}})


@pytest.mark.claim("GGUF-012")
def test_bad_input_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from gguf import TokenType

    ids = {f"t{i}": i for i in range(8)}
    tokens, types, merges = gg.vocabulary(_Vocab(ids, merges=["t0 t1"]), 10)  # type: ignore[arg-type]
    assert tokens == [*ids, "[PAD8]", "[PAD9]"], "added tokens (ids 0 and 1 here) are part of the vocabulary"
    special = data_tokenizer.N_SPECIAL
    assert types == [TokenType.CONTROL] * special + [TokenType.NORMAL] * (8 - special) + [TokenType.UNUSED] * 2
    assert merges == ["t0 t1"], "a merge already written as 'a b' is kept as it is"
    refusals = [
        (_Vocab({**ids, "t9": 9}), 10, "the tokenizer's ids are not 0..n-1"),
        (_Vocab(ids), 7, "the tokenizer has 8 tokens, the model only 7"),
        (_Vocab(ids, "WordPiece"), 8, "the tokenizer is a WordPiece model; GGUF export writes byte-level BPE"),
    ]
    for tokenizer, size, message in refusals:
        with pytest.raises(ExportError) as e:
            gg.vocabulary(tokenizer, size)  # type: ignore[arg-type]
        assert str(e.value) == message
    with pytest.raises(ExportError) as e:
        gg.write_gguf(None, None, tmp_path / "m.gguf", "q5")  # type: ignore[arg-type]
    assert str(e.value) == "--type: 'q5' is not one of f16, q8_0, q4_k_m"
    with pytest.raises(ExportError) as e:
        gg.quantize_q4_k_m(tmp_path / "missing.gguf", tmp_path / "q.gguf")
    assert str(e.value).startswith(f"{tmp_path / 'q.gguf'}: llama_model_quantize failed with status ")
    monkeypatch.setitem(sys.modules, "gguf", None)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ExportError) as e:
        gg.vocabulary(_Vocab(ids), 8)  # type: ignore[arg-type]
    assert str(e.value) == "GGUF export needs the gguf package: pip install 'albor[cpu]'"
    with pytest.raises(ExportError) as e:
        gg.quantize_q4_k_m(tmp_path / "a.gguf", tmp_path / "b.gguf")
    assert str(e.value) == "Q4_K_M export needs llama.cpp: pip install 'albor[cpu]'"
