"""Falsifiers for the ``grad_clip`` contract (contracts/grad_clip.yaml)."""

from __future__ import annotations

import pytest
import torch

from albor.optim.grad_clip import clip_grad_norm
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

SHAPES = [(7, 5), (13,), (3, 4, 5), (1,)]


def _params(device: torch.device, dtype: torch.dtype, norm: float, seed: int = 0) -> list[torch.Tensor]:
    """Parameters whose gradients have global norm ``norm`` and very unequal per-parameter norms."""
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=g, dtype=torch.float64) * 4.0**i for i, s in enumerate(SHAPES)]
    total = torch.linalg.vector_norm(torch.cat([x.flatten() for x in grads]))
    params = []
    for x in grads:
        p = torch.zeros(x.shape, device=device, dtype=dtype, requires_grad=True)
        p.grad = (x * norm / total).to(device, dtype)
        params.append(p)
    return params


def _global_norm(params: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.cat([p.grad.double().flatten() for p in params])).item()


@pytest.mark.claim("CLIP-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("norm", "max_norm"), [(5.0, 1.0), (0.8, 0.5), (37.0, 2.5), (0.2, 0.1)])
def test_clipped_norm_at_most_max(device: torch.device, dtype: torch.dtype, norm: float, max_norm: float) -> None:
    params = _params(device, dtype, norm)
    clip_grad_norm(params, max_norm)
    after = _global_norm(params)
    assert after <= max_norm * (1 + tolerance("CLIP-001", dtype))
    assert abs(after - max_norm) / max_norm <= tolerance("CLIP-001", dtype), "a norm above max must land on max"


@pytest.mark.claim("CLIP-002")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("norm", "max_norm"), [(5.0, 1.0), (0.8, 0.5)])
def test_global_rescale_keeps_direction(device: torch.device, dtype: torch.dtype, norm: float, max_norm: float) -> None:
    params = _params(device, dtype, norm)
    before = [p.grad.double().clone() for p in params]
    clip_grad_norm(params, max_norm)
    factor = max_norm / (norm + 1e-6)
    for p, g0 in zip(params, before, strict=True):
        assert rel_err(p.grad, g0 * factor) <= tolerance("CLIP-002", dtype), tuple(p.shape)


@pytest.mark.claim("CLIP-003")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("norm", "max_norm"), [(0.9, 1.0), (3.0, 10.0)])
def test_unchanged_below_max(device: torch.device, dtype: torch.dtype, norm: float, max_norm: float) -> None:
    params = _params(device, dtype, norm)
    before = [p.grad.clone() for p in params]
    clip_grad_norm(params, max_norm)
    assert all(torch.equal(p.grad, g0) for p, g0 in zip(params, before, strict=True))


@pytest.mark.claim("CLIP-004")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm", [0.3, 5.0])
def test_returns_pre_clip_norm(device: torch.device, dtype: torch.dtype, norm: float) -> None:
    params = _params(device, dtype, norm)
    want = _global_norm(params)
    got = clip_grad_norm(params, 1.0)
    assert abs(got.item() - want) / want <= tolerance("CLIP-004", dtype)


def _sharded_rank(rank: int, world: int, store: str, max_norm: float, out: str) -> None:
    """One rank of CLIP-005: shard seeded gradients over the ranks, clip, and save what this rank holds."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        params = []
        for p in _params(torch.device("cpu"), torch.float64, 5.0):
            grad = p.grad.reshape(-1, 1) if p.dim() < 2 else p.grad  # a shape with rows to shard, one at least
            q = torch.nn.Parameter(distribute_tensor(torch.zeros_like(grad), mesh, [Shard(0)]))
            q.grad = distribute_tensor(grad, mesh, [Shard(0)])
            params.append(q)
        total = clip_grad_norm(params, max_norm)
        local = [q.grad.to_local().clone() for q in params]
        torch.save({"total": total, "kind": type(total).__name__, "local": local}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.claim("CLIP-005")
def test_sharded_gradients_clip_by_the_global_norm(tmp_path) -> None:
    # Two ranks on CPU, each holding a row shard of every gradient (as FSDP2 leaves them): the norm returned and
    # used must be the one over all shards, and each rank's shard must equal its rows of the unsharded clipping.
    world, max_norm = 2, 1.0
    out = str(tmp_path / "rank")
    torch.multiprocessing.spawn(
        _sharded_rank, args=(world, str(tmp_path / "store"), max_norm, out), nprocs=world, join=True
    )
    full = _params(torch.device("cpu"), torch.float64, 5.0)
    want_norm = _global_norm(full)
    clip_grad_norm(full, max_norm)
    tol = tolerance("CLIP-005", torch.float64)
    got = [torch.load(f"{out}-{r}.pt") for r in range(world)]
    for rank, saved in enumerate(got):
        assert saved["kind"] == "Tensor", f"rank {rank}: the norm must be a plain tensor, not a {saved['kind']}"
        assert abs(saved["total"].item() - want_norm) / want_norm <= tol, f"rank {rank}: not the global norm"
        for p, shard in zip(full, saved["local"], strict=True):
            rows = (p.grad.reshape(-1, 1) if p.dim() < 2 else p.grad).tensor_split(world)[rank]
            assert rel_err(shard, rows) <= tol, f"rank {rank}: shard of {tuple(p.shape)} not clipped globally"
