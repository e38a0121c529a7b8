"""Pydantic models for every configurable thing, and the preset loader.

Every field is validated before any work starts; a bad value raises an error naming the field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from albor.config.errors import ConfigError, explain


class Strict(BaseModel):
    """Base for configs: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    """Shape of the LLaMA-style decoder."""

    name: str = Field(description="the preset's name, kept in checkpoints and model cards")
    n_layers: int = Field(gt=0, description="decoder blocks")
    d_model: int = Field(gt=0, description="width of the residual stream")
    n_heads: int = Field(gt=0, description="query heads")
    n_kv_heads: int = Field(gt=0, description="key/value heads (grouped-query attention); divides n_heads")
    d_ff: int = Field(gt=0, description="SwiGLU hidden width")
    vocab_size: int = Field(
        default=32768, gt=7, description="ids the embedding holds; in a train config, data.vocab_size (derived)"
    )
    max_seq_len: int = Field(
        default=1024, gt=0, description="positions the RoPE tables hold; in a train config, data.seq_len (derived)"
    )
    norm_eps: float = Field(default=1e-5, gt=0, description="RMSNorm epsilon")
    rope_theta: float = Field(default=10000.0, gt=1, description="RoPE base b of theta_i = b^(-2i/d)")
    tie_embeddings: bool = Field(default=False, description="the LM head shares the token embedding")
    init_std: float = Field(default=0.02, gt=0, description="std of the N(0, std) init of every matrix")

    @model_validator(mode="after")
    def _shapes(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head_dim = d_model / n_heads = {self.d_model // self.n_heads} must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def n_params(self) -> int:
        """Parameter count implied by the shape (the ``model`` contract checks the module agrees)."""
        d, hd = self.d_model, self.head_dim
        per_layer = d * hd * (self.n_heads + 2 * self.n_kv_heads) + d * d + 3 * d * self.d_ff + 2 * d
        embed = self.vocab_size * d
        return embed + self.n_layers * per_layer + d + (0 if self.tie_embeddings else embed)

    def n_params_non_embedding(self) -> int:
        """Parameters outside the token embedding and the LM head (used for MFU)."""
        embed = self.vocab_size * self.d_model
        return self.n_params() - embed - (0 if self.tie_embeddings else embed)


class OptimConfig(Strict):
    """The optimizer (AdamW, or Muon for the hidden matrices), the warmup + cosine schedule, and gradient
    clipping."""

    name: Literal["adamw", "muon"] = Field(
        default="adamw",
        description="adamw: AdamW for every parameter; muon: Muon for the blocks' matrices, AdamW for the rest",
    )
    lr: float = Field(default=3e-4, gt=0, description="peak learning rate, reached at the end of warmup")
    min_lr: float = Field(default=3e-5, ge=0, description="learning rate the cosine ends on, at the last step")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW (beta1, beta2)")
    eps: float = Field(default=1e-8, gt=0, description="AdamW epsilon")
    weight_decay: float = Field(default=0.1, ge=0, description="decoupled weight decay of matrices (not gains)")
    warmup_steps: int = Field(default=2000, ge=0, description="linear warmup steps")
    max_steps: int = Field(default=100_000, gt=0, description="optimizer steps of the whole run")
    grad_clip: float = Field(default=1.0, gt=0, description="global L2 norm the gradients are clipped to")

    @model_validator(mode="after")
    def _schedule(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas {self.betas} must lie in [0, 1)")
        return self


def commented_yaml(config: BaseModel, indent: int = 0) -> str:
    """``config`` as block YAML with each field's description as a trailing comment; it loads back equal."""
    lines = []
    pad = "  " * indent
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        note = f"  # {info.description}" if info.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{note}")
            lines.append(commented_yaml(value, indent + 1))
            continue
        text = yaml.safe_dump({name: _jsonable(value)}, default_flow_style=True, width=1 << 16).strip()
        lines.append(f"{pad}{text.removeprefix('{').removesuffix('}')}{note}")
    return "\n".join(lines) + ("\n" if indent == 0 else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


M = TypeVar("M", bound=BaseModel)


def load_model_file(path: Path, cls: type[M]) -> M:
    """Read a YAML mapping into the pydantic model ``cls``; errors name the file and the field."""
    data = load_yaml(path)
    try:
        return cls(**data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {explain(e, cls)}") from None


PRESETS = Path(str(resources.files("albor.config") / "presets"))


def presets(kind: str) -> list[str]:
    """Names of the presets shipped in ``albor/config/presets/<kind>/`` (``models`` or ``train``)."""
    return sorted(p.stem for p in (PRESETS / kind).glob("*.yaml"))


def preset_path(kind: str, name: str) -> Path:
    """Path of a preset shipped in ``albor/config/presets/<kind>/<name>.yaml``."""
    path = PRESETS / kind / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no {kind} preset {name!r}; available: {presets(kind)}")
    return path


def load_model_config(name_or_path: str) -> ModelConfig:
    """A model preset by name (tiny, 50m, 125m, 350m) or a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = preset_path("models", name_or_path)
    return load_model_file(path, ModelConfig)
