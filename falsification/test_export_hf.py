"""Falsifiers for the ``export_hf`` contract (contracts/export_hf.yaml): the exported folder, loaded by
``transformers`` itself, against Albor's decoder, RoPE and tokenizer."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from albor.config import load_model_config
from albor.data import tokenizer as data_tokenizer
from albor.export.export_hf import export_hf, write_hf
from albor.export.staging import ExportError, staged_dir, staged_file
from albor.generate import encode, generate, load
from albor.ops import apply_rope, rope_tables
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err
from falsification.exports import PROMPTS, SOURCES, code_tokenizer, need, random_decoder, save_run

if TYPE_CHECKING:
    from transformers import PreTrainedModel

pytestmark = pytest.mark.slow  # transformers takes seconds to import
FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module", autouse=True)
def _offline() -> None:
    need("transformers")
    os.environ["HF_HUB_OFFLINE"] = "1"


def _hf_model(folder: Path) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def exported(random_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_hf(random_run, tmp_path_factory.mktemp("hf") / "model")


@pytest.mark.claim("HF-001")
@pytest.mark.parametrize("preset", ["tiny", "50m", "125m", "350m"])
@pytest.mark.parametrize("tied", [False, True])
def test_logits_match_albor(preset: str, tied: bool, tmp_path: Path) -> None:
    cfg = load_model_config(preset).model_copy(
        update={"n_layers": 2, "d_ff": 40, "vocab_size": 520, "max_seq_len": 40, "tie_embeddings": tied}
    )
    model = random_decoder(cfg, std=0.05)
    hf = _hf_model(export_hf(save_run(tmp_path, model, code_tokenizer()), tmp_path / "hf"))
    ids = torch.randint(0, cfg.vocab_size, (3, cfg.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(ids), hf(ids).logits
    assert got.dtype == torch.float32
    err = rel_err(got, want)
    assert err <= tolerance("HF-001", torch.float32), f"rel err {err:.3g}"


@pytest.mark.claim("HF-002")
def test_rope_convention_is_llamas() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    hd, n = 64, 1024
    config = LlamaConfig(hidden_size=hd * 4, num_attention_heads=4, head_dim=hd, max_position_embeddings=n)
    positions = torch.arange(n)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 4, n, hd, generator=g), torch.randn(1, 2, n, hd, generator=g)
    cos, sin = LlamaRotaryEmbedding(config)(q, positions[None])
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    c, s = rope_tables(positions, hd, config.rope_parameters["rope_theta"])
    q_albor, k_albor = apply_rope(q.transpose(1, 2), k.transpose(1, 2), c, s)
    tol = tolerance("HF-002", torch.float32)
    assert rel_err(q_hf, q_albor.transpose(1, 2)) <= tol and rel_err(k_hf, k_albor.transpose(1, 2)) <= tol
    # The adjacent-pair convention (llama.cpp's "llama" layout) on the same tensors is far off.
    x1, x2 = q[..., 0::2], q[..., 1::2]
    adjacent = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    assert rel_err(adjacent, q_hf) > 1e-2, "the check cannot tell the two pairings apart"


@pytest.mark.claim("HF-003")
def test_greedy_continuations_identical(random_run: Path, exported: Path) -> None:
    inference = load(random_run, "cpu")
    hf = _hf_model(exported)
    for prompt in PROMPTS:
        ids = encode(inference.tokenizer, prompt)
        ours = list(generate(inference.model, ids, 64, eos_id=None))
        out = hf.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64, do_sample=False, eos_token_id=None)
        assert out[0, len(ids) :].tolist() == ours, prompt


@pytest.mark.claim("HF-004")
def test_tokenizer_matches_albor(random_run: Path, exported: Path) -> None:
    from transformers import AutoTokenizer

    ours = load(random_run, "cpu").tokenizer
    theirs = AutoTokenizer.from_pretrained(exported)
    for text in SOURCES:
        ids = data_tokenizer.encode(ours, text)
        assert theirs(text, add_special_tokens=False).input_ids == ids, repr(text)
        assert theirs(text).input_ids == encode(ours, text), repr(text)
        assert theirs.decode(ids) == text, repr(text)
    # A pair (as a reader's text-pair API makes it) is two documents, each after its </s>.
    a, b = SOURCES[0], SOURCES[1]
    pair = [data_tokenizer.EOS, *data_tokenizer.encode(ours, a), data_tokenizer.EOS, *data_tokenizer.encode(ours, b)]
    assert theirs(a, b).input_ids == pair
    names = data_tokenizer.SPECIAL_TOKENS
    assert theirs.convert_tokens_to_ids(list(names)) == list(range(len(names)))
    assert (theirs.eos_token_id, theirs.pad_token_id, theirs.unk_token_id) == (2, 3, 0)
    assert theirs.bos_token_id == data_tokenizer.EOS  # documents follow </s>


@pytest.mark.claim("HF-005")
def test_folder_loads_offline(exported: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert sorted(p.name for p in exported.iterdir() if p.name in FILES) == sorted(FILES)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(exported.stat().st_mode) == 0o777 & ~umask
    for f in exported.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name
    _, info = AutoModelForCausalLM.from_pretrained(exported, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info


@pytest.mark.claim("HF-006")
def test_export_refuses_and_leaves_nothing(
    random_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from albor.export.__main__ import main

    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ExportError, match=str(out)):
        export_hf(random_run, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["hf", str(random_run), str(out)]) == 2 and str(out) in capsys.readouterr().err
    assert main(["hf", str(tmp_path / "no-such-run"), str(tmp_path / "other")]) == 2
    assert "no-such-run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"], "a failed export left files behind"


@pytest.mark.claim("HF-007")
def test_the_folder_declares_what_llama_readers_expect(random_run: Path, tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    inference = load(random_run, "cpu")
    cfg = inference.model_config
    inference.model.to(torch.bfloat16)  # the file holds float32 whatever the loaded model's dtype
    out = write_hf(inference, tmp_path / "hf")
    read = {name: json.loads((out / name).read_text()) for name in FILES if name.endswith(".json")}
    fim = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
    assert read["config.json"] == {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_model // cfg.n_heads, "hidden_act": "silu", "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 3, "torch_dtype": "float32", "albor_model": cfg.name,
    }  # fmt: skip
    assert read["generation_config.json"] == {
        "bos_token_id": 2,
        "eos_token_id": 2,
        "pad_token_id": 3,
        "do_sample": False,
    }
    assert read["tokenizer_config.json"] == {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "additional_special_tokens": fim, "extra_special_tokens": fim,
        "fim_prefix_token": fim[0], "fim_suffix_token": fim[1], "fim_middle_token": fim[2],
        "split_special_tokens": True, "model_max_length": cfg.max_seq_len, "clean_up_tokenization_spaces": False,
    }  # fmt: skip
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # noqa: SIM118 (a safe_open handle is not iterable)
    assert (out / "albor_config.yaml").read_bytes() == (inference.path / "config.yaml").read_bytes()


@pytest.mark.claim("HF-008")
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_staged_export_is_whole_or_absent(tmp_path: Path, kind: str) -> None:
    stage = staged_file if kind == "file" else staged_dir

    def write(tmp: Path) -> None:
        if kind == "file":
            tmp.write_bytes(b"whole")
        else:
            (tmp / "part").write_bytes(b"whole")

    def remove(tmp: Path) -> None:
        if kind == "file":
            tmp.unlink()
        else:
            shutil.rmtree(tmp)

    out = tmp_path / "export"
    with pytest.raises(RuntimeError, match="interrupted"), stage(out) as tmp:
        write(tmp)
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [], "an interrupted export left files behind"
    # A block that fails after its staging path is already gone still fails with its own error.
    with pytest.raises(RuntimeError, match="interrupted"), stage(out) as tmp:
        remove(tmp)
        raise RuntimeError("interrupted")
    with stage(out) as tmp:
        # Beside its destination, so that the rename stays on one filesystem and is atomic.
        assert tmp.parent == out.parent, f"staged in {tmp.parent}, not beside {out}"
        write(tmp)
        assert not out.exists(), "the export appeared before it was whole"
    written = out if kind == "file" else out / "part"
    assert written.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["export"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
    for taken in (out, tmp_path / "link"):
        if taken.name == "link":
            taken.symlink_to(tmp_path / "nowhere")
        with pytest.raises(ExportError, match=f"{taken}: exists already; an export never overwrites"):
            stage(taken).__enter__()
    with pytest.raises(ExportError, match=f"^{tmp_path / 'missing'}: no such directory$"):
        stage(tmp_path / "missing" / "export").__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "link"]
