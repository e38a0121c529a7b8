"""The LLaMA-style decoder, whose ops run through the model's own ``Kernels`` (``albor.ops.dispatch``).

Pre-norm blocks: x + attn(rmsnorm(x)), then x + ffn(rmsnorm(x)); GQA attention with RoPE; SwiGLU
FFN; a final RMSNorm and the LM head (tied to the embedding when the config says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from albor.config import ModelConfig
from albor.ops import Reduction, rope_tables
from albor.ops.dispatch import Kernels
from albor.recompute import Recompute, recomputed


@dataclass
class KVCache:
    """Keys and values of every layer for cached decoding: (B, Hkv, T_max, D) each, filled to ``length``."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        shape = (batch, cfg.n_kv_heads, cfg.max_seq_len, cfg.head_dim)
        return cls(
            k=[torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            v=[torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
        )


class Attention(nn.Module):
    """Grouped-query self-attention with one fused q/k/v projection."""

    def __init__(self, cfg: ModelConfig, kernels: Kernels) -> None:
        super().__init__()
        self.kernels = kernels
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(
        self,
        qkv: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """Attention over the ``qkv`` projection of the normed input (the block makes it, so that it can
        recompute the norm in the backward)."""
        b, t, _ = qkv.shape
        d = self.n_heads * self.hd
        q, k, v = qkv.split([d, self.n_kv * self.hd, self.n_kv * self.hd], -1)
        q, k = self.kernels.apply_rope(q.view(b, t, self.n_heads, self.hd), k.view(b, t, self.n_kv, self.hd), cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(b, t, self.n_kv, self.hd).transpose(1, 2)
        if cache is not None:
            end = cache.length + t
            cache.k[layer][:, :, cache.length : end] = k
            cache.v[layer][:, :, cache.length : end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
        y = self.kernels.attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """SwiGLU FFN with one fused gate/up projection."""

    def __init__(self, cfg: ModelConfig, kernels: Kernels) -> None:
        super().__init__()
        self.kernels = kernels
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        """The down projection of SwiGLU of the ``gate_up`` projection of the normed input (made by the
        block, so that it can recompute the product in the backward)."""
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down(self.kernels.swiglu(gate, up))


class Block(nn.Module):
    """One pre-norm decoder block; with gradients on, the backward recomputes the results named in
    ``recompute`` (``albor.recompute``) rather than keeping them."""

    def __init__(self, cfg: ModelConfig, kernels: Kernels, recompute: frozenset[Recompute] = frozenset()) -> None:
        super().__init__()
        self.kernels = kernels
        self.recompute = recompute
        self.eps = cfg.norm_eps
        self.attn_norm = nn.Parameter(torch.ones(cfg.d_model))
        self.attn = Attention(cfg, kernels)
        self.ffn_norm = nn.Parameter(torch.ones(cfg.d_model))
        self.ffn = FeedForward(cfg, kernels)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        grad = torch.is_grad_enabled()
        norms = grad and "rmsnorm" in self.recompute
        qkv = recomputed(self._qkv, x) if norms else self._qkv(x)
        a = self.attn(qkv, cos, sin, cache, layer)
        # The residual add is recomputed with the norm after it: the region keeps x and the attention's
        # bf16 output, not their float32 sum.
        x, gate_up = recomputed(self._gate_up, x, a) if norms else self._gate_up(x, a)
        return x + (recomputed(self.ffn, gate_up) if grad and "swiglu" in self.recompute else self.ffn(gate_up))

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn.qkv(self.kernels.rmsnorm(x, self.attn_norm, self.eps))

    def _gate_up(self, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + a
        return x, self.ffn.gate_up(self.kernels.rmsnorm(x, self.ffn_norm, self.eps))


class Decoder(nn.Module):
    """The whole model: token ids (B, T) to logits (B, T, V), or to the loss when targets are given."""

    def __init__(
        self, cfg: ModelConfig, kernels: Kernels | None = None, recompute: frozenset[Recompute] = frozenset()
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.kernels = kernels or Kernels()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, self.kernels, recompute) for _ in range(cfg.n_layers))
        self.norm = nn.Parameter(torch.ones(cfg.d_model))
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        # Built once for every position: inside the compiled step the float64 table arithmetic would be
        # fused into the per-element RoPE kernels and recomputed for every element (ALB-203).
        cos, sin = rope_tables(torch.arange(cfg.max_seq_len), cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Init contract: every matrix N(0, init_std), every RMSNorm gain 1."""
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, mean=0.0, std=self.cfg.init_std)
            else:
                assert name.endswith("norm"), name
                nn.init.ones_(p)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.head is None else self.head.weight

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Float32 logits of final-norm hidden states; the untied head is called as a module, so that a
        quantised twin (``albor.export.quantize``) can take its place."""
        return (h @ self.embed.weight.t() if self.head is None else self.head(h)).float()

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, d) for token ids (B, T)."""
        t = idx.shape[1]
        start = 0 if cache is None else cache.length
        if start + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[start : start + t], self.rope_sin[start : start + t]
        x = self.embed(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.length += t
        return self.kernels.rmsnorm(x, self.norm, self.cfg.norm_eps)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        reduction: Reduction = "mean",
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) in float32, or with ``targets`` (B, T) the cross entropy."""
        h = self.hidden(idx, cache)
        if targets is None:
            return self.logits(h)
        return self.kernels.linear_cross_entropy(
            h.flatten(0, 1), self.head_weight, targets.flatten(), reduction=reduction
        )
