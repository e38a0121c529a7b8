"""Falsifiers for the ``model`` contract (contracts/model.yaml)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from albor import ops
from albor.config import ModelConfig, load_model_config, presets
from albor.model import Block, Decoder, KVCache
from albor.ops.dispatch import Kernels
from albor.train.config import load_config
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err
from albor.verify.references import decoder_logits

TINY = ModelConfig(
    name="model-test", n_layers=2, d_model=12, n_heads=3, n_kv_heads=1, d_ff=10, vocab_size=17, max_seq_len=16
)


def _decoder(device: torch.device, dtype: torch.dtype, cfg: ModelConfig = TINY) -> Decoder:
    """A decoder with large weights and gains away from 1, so that every path carries weight."""
    torch.manual_seed(0)
    model = Decoder(cfg.model_copy(update={"init_std": 0.3})).to(device, dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def _tokens(device: torch.device, shape: tuple[int, int] = (2, 9), high: int = TINY.vocab_size, seed: int = 1):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed)).to(device)


@pytest.mark.claim("MODEL-001")
@pytest.mark.parametrize("preset", ["tiny", "50m", "125m", "350m"])
@pytest.mark.parametrize("tied", [False, True])
def test_param_count_matches_config(preset: str, tied: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_model_config(preset).model_copy(update={"tie_embeddings": tied})
    if preset != "tiny":
        # A count needs no values, and normal_ on the meta device imports torch._dynamo (seconds).
        monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *args, **kwargs: t)
    with torch.device("cpu" if preset == "tiny" else "meta"):
        model = Decoder(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == cfg.n_params()
    embedding = {id(model.embed.weight), id(model.head_weight)}
    non_embedding = sum(p.numel() for p in model.parameters() if id(p) not in embedding)
    assert non_embedding == cfg.n_params_non_embedding()


@pytest.mark.claim("MODEL-002")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_shape_and_loss_path(device: torch.device, dtype: torch.dtype) -> None:
    model = _decoder(device, dtype)
    idx, targets = _tokens(device), _tokens(device, seed=2)
    targets[0, :3] = ops.IGNORE_INDEX
    logits = model(idx)
    assert logits.shape == (*idx.shape, TINY.vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    loss = model(idx, targets)
    want = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten())
    assert loss.ndim == 0 and rel_err(loss, want) <= tolerance("MODEL-002", torch.float32)
    total = model(idx, targets, reduction="sum")
    want = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten(), reduction="sum")
    assert total.ndim == 0 and rel_err(total, want) <= tolerance("MODEL-002", torch.float32)


@pytest.mark.claim("MODEL-003")
def test_block_gradcheck(device: torch.device) -> None:
    cfg = ModelConfig(
        name="block", n_layers=1, d_model=8, n_heads=2, n_kv_heads=1, d_ff=6, vocab_size=11, max_seq_len=8
    )
    torch.manual_seed(0)
    block = Block(cfg, Kernels()).to(device, torch.float64)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 2 else 0.2) + (1.0 if name.endswith("norm") else 0.0))
    cos, sin = ops.rope_tables(torch.arange(5, device=device), cfg.head_dim, dtype=torch.float64)
    x = torch.randn(1, 5, cfg.d_model, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: block(a, cos, sin), (x,))


@pytest.mark.claim("MODEL-004")
def test_gradients_match_finite_differences(device: torch.device) -> None:
    model = _decoder(device, torch.float64)
    idx, targets = _tokens(device), _tokens(device, seed=2)
    model(idx, targets).backward()
    g = torch.Generator().manual_seed(3)
    tol, h = tolerance("MODEL-004", torch.float64), 1e-6
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max().item() > 0, f"{name} receives no gradient"
        flat, grad = p.data.view(-1), p.grad.view(-1)
        coords = [int(grad.abs().argmax()), *torch.randint(0, flat.numel(), (2,), generator=g).tolist()]
        for i in coords:
            old = flat[i].item()
            with torch.no_grad():
                flat[i] = old + h
                up = model(idx, targets).item()
                flat[i] = old - h
                down = model(idx, targets).item()
                flat[i] = old
            fd = (up - down) / (2 * h)
            scale = max(abs(fd), grad.abs().max().item())
            assert abs(grad[i].item() - fd) <= tol * scale, f"{name}[{i}]: autograd {grad[i].item()} vs fd {fd}"


@pytest.mark.claim("MODEL-005")
def test_tied_head_uses_embedding(device: torch.device) -> None:
    model = _decoder(device, torch.float32, TINY.model_copy(update={"tie_embeddings": True}))
    assert model.head is None and model.head_weight is model.embed.weight
    assert not any(name.startswith("head") for name, _ in model.named_parameters())
    # Tokens below 8 only: rows 8.. of the embedding are reachable only through the head.
    idx = _tokens(device, high=8)
    logits = model(idx)
    want = model.hidden(idx).double() @ model.embed.weight.double().t()
    assert rel_err(logits, want) <= tolerance("MODEL-005", torch.float32)
    model(idx, _tokens(device, seed=2)).backward()
    assert model.embed.weight.grad[8:].abs().sum(-1).min().item() > 0, "the head's gradient must reach the embedding"


class _Float64Ops(TorchDispatchMode):
    """Records every aten op that produces a float64 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves(out)):
            self.seen.append(str(func))
        return out


@pytest.mark.claim("MODEL-006")
def test_step_computes_nothing_in_float64(device: torch.device) -> None:
    model = _decoder(device, torch.float32)
    idx = _tokens(device)
    with _Float64Ops() as mode:
        model(idx, _tokens(device, seed=2)).backward()
        model(idx[:, :3], cache=KVCache.empty(model.cfg, 2, device, torch.float32))
    assert not mode.seen, f"float64 work inside a float32 step: {sorted(set(mode.seen))}"


# One layer of the 50m preset with a smaller vocabulary, and an init_std that is not the default.
INIT_CFG = load_model_config("50m").model_copy(update={"n_layers": 1, "vocab_size": 2053, "init_std": 0.037})
NORMAL_WITHIN = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}


@pytest.fixture(scope="module")
def init_model() -> Decoder:
    torch.manual_seed(0)
    return Decoder(INIT_CFG)


@pytest.mark.claim("MODEL-007")
def test_matrices_normal_with_init_std(init_model: Decoder) -> None:
    z = tolerance("MODEL-007")
    sigma = INIT_CFG.init_std
    matrices = [(name, p.detach().double().flatten()) for name, p in init_model.named_parameters() if p.ndim == 2]
    assert {name for name, _ in matrices} >= {"embed.weight", "head.weight", "blocks.0.attn.qkv.weight"}
    for name, w in matrices:
        n = w.numel()
        assert abs(w.mean().item()) <= z * sigma / math.sqrt(n), f"{name}: mean"
        assert abs(w.std().item() - sigma) <= z * sigma / math.sqrt(2 * n), f"{name}: std"
        for k, p in NORMAL_WITHIN.items():
            share = (w.abs() < k * sigma).double().mean().item()
            assert abs(share - p) <= z * math.sqrt(p * (1 - p) / n), f"{name}: share within {k}σ is {share}"


@pytest.mark.claim("MODEL-008")
def test_gains_exactly_one(init_model: Decoder) -> None:
    gains = [(name, p) for name, p in init_model.named_parameters() if p.ndim == 1]
    assert len(gains) == 2 * INIT_CFG.n_layers + 1
    trained = Decoder(INIT_CFG.model_copy(update={"n_layers": 2, "vocab_size": 29}))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    trained.reset_parameters()
    gains += [(name, p) for name, p in trained.named_parameters() if p.ndim == 1]
    for name, p in gains:
        assert name.endswith("norm") and torch.equal(p, torch.ones_like(p)), name


@pytest.mark.claim("MODEL-009")
def test_same_seed_same_parameters() -> None:
    cfg = INIT_CFG.model_copy(update={"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 96, "vocab_size": 101})
    states = []
    for _ in range(2):
        torch.manual_seed(1234)
        states.append(Decoder(cfg).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.slow  # transformers takes seconds to import
@pytest.mark.claim("MODEL-010")
@pytest.mark.parametrize("tied", [False, True])
def test_equals_hugging_face_llama(tied: bool) -> None:
    pytest.importorskip("transformers", reason="transformers is not installed (the test extra)")
    from transformers import LlamaConfig, LlamaForCausalLM

    from albor.export.export_hf import hf_config, hf_state_dict

    cfg = load_model_config("350m").model_copy(
        update={"n_layers": 2, "d_ff": 96, "vocab_size": 301, "max_seq_len": 64, "tie_embeddings": tied}
    )
    torch.manual_seed(0)
    model = Decoder(cfg.model_copy(update={"init_std": 0.05})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    hf = LlamaForCausalLM(LlamaConfig(**hf_config(cfg))).eval()
    hf.load_state_dict(hf_state_dict(model), strict=not tied)
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = rel_err(hf(ids).logits, model(ids))
    assert err <= tolerance("MODEL-010", torch.float32), f"rel err {err:.3g}"


# Every shipped model, as a model preset and as a train preset builds it (vocabulary and context from its data).
SHIPPED = {f"model:{n}": load_model_config(n) for n in presets("models")} | {
    f"train:{n}": load_config(n).model for n in presets("train")
}
# Each declared value changed to one no preset uses: a value hard-coded to the preset's cannot pass.
CHANGES = {
    "rope_theta": lambda cfg: cfg.rope_theta * 0.37 + 11,
    "norm_eps": lambda cfg: 0.05,
    "init_std": lambda cfg: 0.013,
    "tie_embeddings": lambda cfg: not cfg.tie_embeddings,
}


def _one_layer(cfg: ModelConfig) -> ModelConfig:
    """The preset's declared values (RoPE base, head dim, context, norm eps, init std, tied head) on one layer of
    its grouping ratio, with a small vocabulary: what is left sets only the cost."""
    ratio = cfg.n_heads // cfg.n_kv_heads
    update = {"n_layers": 1, "n_heads": ratio, "n_kv_heads": 1, "d_model": ratio * cfg.head_dim, "d_ff": 40}
    return cfg.model_copy(update={**update, "vocab_size": 97})


@pytest.mark.claim("MODEL-011")
@pytest.mark.parametrize("change", ["none", *CHANGES])
@pytest.mark.parametrize("preset", sorted(SHIPPED))
def test_declared_values_reach_the_decoder(preset: str, change: str) -> None:
    kind, name = preset.split(":")
    if kind == "train":
        data = load_config(name).data
        assert (SHIPPED[preset].vocab_size, SHIPPED[preset].max_seq_len) == (data.vocab_size, data.seq_len)
    cfg = _one_layer(SHIPPED[preset])
    if change != "none":
        cfg = cfg.model_copy(update={change: CHANGES[change](cfg)})
    torch.manual_seed(0)
    model = Decoder(cfg)
    hd, positions = cfg.head_dim, torch.arange(cfg.max_seq_len, dtype=torch.float64)
    angles = positions[:, None] * torch.tensor(
        [cfg.rope_theta ** (-2 * i / hd) for i in range(hd // 2)], dtype=torch.float64
    )
    for table, want in ((model.rope_cos, angles.cos()), (model.rope_sin, angles.sin())):
        assert table.shape == want.shape, "the RoPE tables hold every position of the context"
        assert (table.double() - want).abs().max().item() <= tolerance("MODEL-011", "tables"), "RoPE angles"
    weights = dict(model.named_parameters())
    assert ("head.weight" in weights) is not cfg.tie_embeddings and weights["embed.weight"].shape[0] == cfg.vocab_size
    matrices = torch.cat([p.detach().double().flatten() for p in weights.values() if p.ndim == 2])
    z, n = tolerance("MODEL-007"), matrices.numel()
    assert abs(matrices.std().item() - cfg.init_std) <= z * cfg.init_std / math.sqrt(2 * n), "init std"
    model = model.double()
    idx = _tokens(torch.device("cpu"), (2, 16), cfg.vocab_size)
    want = decoder_logits(model.state_dict(), cfg, idx)
    assert rel_err(model(idx), want) <= tolerance("MODEL-011", "logits"), "logits against the written-out decoder"


@pytest.mark.claim("MODEL-012")
def test_cached_decoding_equals_the_written_out_decoder(device: torch.device) -> None:
    model = _decoder(device, torch.float64)
    idx = _tokens(device, (2, TINY.max_seq_len))
    want = decoder_logits({k: v.cpu() for k, v in model.state_dict().items()}, TINY, idx.cpu())
    cache = KVCache.empty(TINY, 2, device, torch.float64)
    start = 0
    # A prefill, single tokens, then a chunk: each call's logits are the full sequence's at its positions.
    for n in (5, 1, 1, 4, 5):
        got = model(idx[:, start : start + n], cache=cache)
        assert rel_err(got, want[:, start : start + n]) <= 1e-6, (start, n)  # the logits come out in float32
        start += n
        assert cache.length == start
    with pytest.raises(ValueError, match=f"sequence of {TINY.max_seq_len + 1} tokens exceeds max_seq_len 16"):
        model(idx[:, :1], cache=cache)
    for dtype in (torch.float32, torch.bfloat16):
        empty = KVCache.empty(TINY, 3, device, dtype)
        assert empty.length == 0 and len(empty.k) == len(empty.v) == TINY.n_layers
        for t in (*empty.k, *empty.v):
            assert (t.shape, t.dtype, t.device.type) == ((3, 1, 16, 4), dtype, device.type)
    # The RoPE tables are built from the config, never saved: a checkpoint holds the weights only.
    assert not {"rope_cos", "rope_sin"} & set(model.state_dict())


@pytest.mark.claim("MODEL-013")
@pytest.mark.parametrize("names", [("rmsnorm",), ("swiglu",), ("rmsnorm", "swiglu")], ids="+".join)
def test_each_recompute_choice_reruns_its_regions_for_the_same_gradients(names: tuple[str, ...]) -> None:
    from falsification.backward import backward_ops

    recompute = frozenset(names)
    ops = backward_ops(TINY, recompute)
    assert ops["rsqrt"] == (2 * TINY.n_layers if "rmsnorm" in recompute else 0), "the norms rerun in the backward"
    assert ops["silu"] == (TINY.n_layers if "swiglu" in recompute else 0), "SwiGLU's product reruns in the backward"
    idx, targets = _tokens(torch.device("cpu")), _tokens(torch.device("cpu"), seed=2)
    grads = []
    for r in (frozenset(), recompute):
        model = _decoder(torch.device("cpu"), torch.float64)
        model.blocks.apply(lambda m, r=r: setattr(m, "recompute", r) if isinstance(m, Block) else None)
        model(idx, targets).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True)), "recomputation changed a gradient"
    with torch.no_grad():  # the model recomputes: without gradients it runs plain, and keeps nothing
        assert model(idx).grad_fn is None
