"""Falsifiers for the ``model`` contract (contracts/model.yaml)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from albor import ops
from albor.config import ModelConfig, load_model_config
from albor.contracts import tolerance
from albor.model import Block, Decoder, KVCache
from albor.testing import rel_err

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


@pytest.mark.claim("MODEL-003")
def test_block_gradcheck(device: torch.device) -> None:
    cfg = ModelConfig(
        name="block", n_layers=1, d_model=8, n_heads=2, n_kv_heads=1, d_ff=6, vocab_size=11, max_seq_len=8
    )
    torch.manual_seed(0)
    block = Block(cfg).to(device, torch.float64)
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
