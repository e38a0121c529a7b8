"""The run configuration: presets shipped with the package, YAML files, and ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from albor.config import ModelConfig, OptimConfig, Strict, load_model_config, load_yaml, preset_path
from albor.data.config import DataConfig
from albor.ops.dispatch import OPS, Backend


class TrainConfig(Strict):
    """Everything a training run needs; saved as config.yaml in the run and in every checkpoint."""

    name: str = Field(default="default", pattern=r"^[\w.-]+$")
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    micro_batch: int = Field(default=8, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    epochs: int = Field(default=1, gt=0, description="epochs over the train split the schedule may use")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 on CUDA, fp32 on CPU")
    compile: bool = False
    activation_memory_budget: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="compiled runs: the share of activations the step may keep; below 1 recomputes the rest",
    )
    kernels: dict[str, Backend] = Field(default_factory=dict, description="backend per op; unnamed ops: reference")
    allow_kernel_fallback: bool = False
    deterministic: bool = False
    eval_every: int = Field(default=100, gt=0)
    eval_windows: int = Field(default=64, gt=0)
    checkpoint_every: int = Field(default=100, gt=0)
    keep_last: int = Field(default=3, gt=0)
    alert_loss: float = Field(default=10.0, gt=0)
    alert_grad_norm: float = Field(default=100.0, gt=0)
    alert_after: int = Field(
        default=50, ge=0, description="steps before the loss/grad-norm thresholds apply (initial loss is ln V)"
    )
    runs_dir: Path = Path("runs")

    @field_validator("model", mode="before")
    @classmethod
    def _model_preset(cls, v: Any) -> Any:
        return load_model_config(v) if isinstance(v, str) else v

    @field_validator("kernels")
    @classmethod
    def _known_ops(cls, v: dict[str, Backend]) -> dict[str, Backend]:
        unknown = sorted(set(v) - set(OPS))
        if unknown:
            raise ValueError(f"unknown ops {unknown}; ops: {sorted(OPS)}")
        return v

    @model_validator(mode="after")
    def _fits(self) -> TrainConfig:
        if self.model.vocab_size != self.data.vocab_size:
            raise ValueError(
                f"model.vocab_size ({self.model.vocab_size}) must equal data.vocab_size ({self.data.vocab_size})"
            )
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(f"data.seq_len ({self.data.seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len})")
        if self.activation_memory_budget < 1 and not self.compile:
            raise ValueError(f"activation_memory_budget={self.activation_memory_budget} needs compile: true")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if isinstance(child, str) and part == "model":
            child = load_model_config(child).model_dump(mode="json")
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``a.b=value`` pairs, each value read as YAML (so numbers, booleans and lists work)."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form field.path=value")
        pairs.append((key, yaml.safe_load(raw) if raw else raw))
    return pairs


def build_config(base: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """Apply overrides to a config mapping and validate it; errors name the field."""
    tree = dict(base)
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    try:
        return TrainConfig(**tree)
    except ValidationError as e:
        raise ValueError(f"invalid config:\n{e}") from e


def load_config(name_or_path: str, overrides: list[str] | None = None) -> TrainConfig:
    """A train preset by name (default, pretrain-350m, …) or a YAML file, with ``key=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = preset_path("train", name_or_path)
    return build_config(load_yaml(path), overrides or [])
