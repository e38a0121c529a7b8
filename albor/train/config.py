"""The run configuration: presets shipped with the package, YAML files, and ``key=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import Field, field_validator, model_validator

from albor.config import ModelConfig, OptimConfig, Strict, commented_yaml, load_model_config, load_yaml, preset_path
from albor.config.errors import ConfigError
from albor.config.overrides import parse_overrides, set_dotted, validate
from albor.data.config import DataConfig
from albor.ladder.lora import LoraSettings
from albor.ops.dispatch import OPS, Backend
from albor.recompute import Recompute

C = TypeVar("C", bound="TrainConfig")
DERIVED = {"vocab_size", "max_seq_len"}  # the model fields that follow from data.vocab_size and data.seq_len


class TrainConfig(Strict):
    """Everything a training run needs; saved as config.yaml in the run and in every checkpoint."""

    name: str = Field(default="default", pattern=r"^[\w.-]+$", description="the run lives in runs_dir/name")
    model: ModelConfig = Field(description="a model preset (tiny, 50m, 125m, 350m) or its fields")
    data: DataConfig
    optim: OptimConfig
    init_from: Path | None = Field(
        default=None,
        description="start from this checkpoint's (or run's) weights with a fresh optimizer and step 0 (fine-tuning)",
    )
    micro_batch: int = Field(default=8, gt=0, description="windows per forward/backward on each rank")
    grad_accum: int = Field(default=1, gt=0, description="micro-batches accumulated into one optimizer step")
    epochs: int = Field(default=1, gt=0, description="epochs over the train split the schedule may use")
    seed: int = Field(default=0, description="seeds the weights and the data order")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when a GPU is visible")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 on CUDA, fp32 on CPU")
    compile: bool = Field(default=False, description="torch.compile the training step")
    compile_scope: Literal["step", "block"] = Field(
        default="step",
        description="compiled runs: step compiles the whole forward as one graph; block compiles one decoder "
        "block, whose graph every block reuses (a shorter first compile)",
    )
    activation_memory_budget: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="compiled runs: the share of activations the step may keep; below 1 recomputes the rest",
    )
    recompute: list[Recompute] = Field(
        default_factory=list,
        description="results each block recomputes in the backward instead of keeping (its matmuls' are kept): "
        "rmsnorm (both norms' outputs, with the residual add between them), swiglu (the SwiGLU product)",
    )
    kernels: dict[str, Backend] = Field(
        default_factory=dict, description=f"backend per op ({', '.join(OPS)}); unnamed ops: reference"
    )
    allow_kernel_fallback: bool = Field(
        default=False, description="run the reference (recorded in run.json) when a kernel fails its check"
    )
    deterministic: bool = Field(default=False, description="torch.use_deterministic_algorithms (bitwise CUDA resume)")
    eval_every: int = Field(default=100, gt=0, description="steps between val_ppl evaluations")
    eval_windows: int | None = Field(default=64, gt=0, description="val windows each evaluation reads; null: every one")
    eval_sample_tokens: int = Field(
        default=0,
        ge=0,
        description="tokens sampled (temperature 1, from the run's RNG) after each evaluation and logged; 0: none",
    )
    checkpoint_every: int = Field(default=100, gt=0, description="steps between checkpoints")
    keep_last: int = Field(default=3, gt=0, description="checkpoints kept besides the best")
    alert_loss: float = Field(default=10.0, gt=0, description="stop when the loss exceeds this (after alert_after)")
    alert_grad_norm: float = Field(default=100.0, gt=0, description="stop when the grad norm exceeds this")
    alert_after: int = Field(
        default=50, ge=0, description="steps before the loss/grad-norm thresholds apply (initial loss is ln V)"
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="on several ranks: ddp replicates the model; fsdp shards weights, gradients and optimizer state",
    )
    async_checkpoint: bool = Field(
        default=False, description="fsdp: write checkpoints in the background; each completes at the next save"
    )
    logger: Literal["jsonl", "tensorboard"] = Field(
        default="jsonl",
        description="jsonl: metrics.jsonl; tensorboard: TensorBoard event files beside it too (extra: tensorboard)",
    )
    runs_dir: Path = Field(default=Path("runs"), description="folder that holds every run")
    lora: LoraSettings | None = Field(
        default=None, description="train LoRA adapters (through peft) on a frozen init_from model; null: all weights"
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_model_sizes(cls, tree: Any) -> Any:
        """The vocabulary and the context are said once, in ``data``; the model's copies follow from them."""
        if not isinstance(tree, dict) or "model" not in tree:
            return tree
        model = tree["model"]
        if isinstance(model, str):
            try:
                model = load_model_config(model).model_dump(mode="json", exclude=DERIVED)
            except ConfigError:
                return tree  # the field's own validator names the unknown preset
        if not isinstance(model, dict):
            return tree
        data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
        fields = DataConfig.model_fields
        derived = {
            "vocab_size": data.get("vocab_size", fields["vocab_size"].default),
            "max_seq_len": data.get("seq_len", fields["seq_len"].default),
        }
        source = {"vocab_size": "data.vocab_size", "max_seq_len": "data.seq_len"}
        for key, value in derived.items():
            if key in model and model[key] != value:
                raise ValueError(
                    f"model.{key} ({model[key]}) is derived from {source[key]} ({value}): "
                    f"leave it out, or set {source[key]}"
                )
        return {**tree, "model": {**model, **derived}}

    @field_validator("model", mode="before")
    @classmethod
    def _model_preset(cls, v: Any) -> Any:
        return load_model_config(v) if isinstance(v, str) else v

    @field_validator("recompute")
    @classmethod
    def _each_once(cls, v: list[Recompute]) -> list[Recompute]:
        if len(set(v)) < len(v):
            raise ValueError(f"names a result more than once: {v}")
        return v

    @field_validator("kernels")
    @classmethod
    def _known_ops(cls, v: dict[str, Backend]) -> dict[str, Backend]:
        unknown = sorted(set(v) - set(OPS))
        if unknown:
            raise ValueError(f"unknown ops {unknown}; ops: {sorted(OPS)}")
        return v

    @model_validator(mode="after")
    def _fits(self) -> TrainConfig:
        if self.async_checkpoint and self.parallel != "fsdp":
            raise ValueError("async_checkpoint needs parallel: fsdp (its distributed checkpoints are written by DCP)")
        if self.compile_scope == "block" and not self.compile:
            raise ValueError("compile_scope: block needs compile: true")
        if self.compile_scope == "block" and self.parallel == "fsdp":
            raise ValueError("compile_scope: block is not built for parallel: fsdp (its hooks wrap each block)")
        if self.activation_memory_budget < 1 and not self.compile:
            raise ValueError(f"activation_memory_budget={self.activation_memory_budget} needs compile: true")
        if self.eval_sample_tokens >= self.data.seq_len:
            raise ValueError(
                f"eval_sample_tokens={self.eval_sample_tokens} must be below data.seq_len={self.data.seq_len}: "
                "the sample and the token it starts from share the context"
            )
        if self.optim.name == "muon" and (self.parallel == "fsdp" or self.lora is not None):
            raise ValueError(
                "optim.name: muon orthogonalises whole matrices of the full model: not with parallel: fsdp, which "
                "shards them, nor with lora"
            )
        if self.lora is not None and (self.init_from is None or self.parallel == "fsdp"):
            raise ValueError("lora adapts a trained model on one process or with ddp: it needs init_from, not fsdp")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def to_commented_yaml(self) -> str:
        """The resolved config as YAML with every field's meaning as a comment (``--print-config``)."""
        return commented_yaml(self)


def build_config(base: dict[str, Any], overrides: list[str], schema: type[C] = TrainConfig) -> C:
    """Apply ``a.b=value`` overrides to a config mapping and validate it as ``schema`` (TrainConfig or an
    extension of it); errors name the field."""
    tree = copy.deepcopy(base)
    for key, value in parse_overrides(overrides):
        # `model.n_layers=4` on a preset name edits that preset's fields.
        if key.startswith("model.") and isinstance(tree.get("model"), str):
            tree["model"] = load_model_config(tree["model"]).model_dump(mode="json", exclude=DERIVED)
        set_dotted(tree, key, value)
    return validate(schema, tree)


def load_config(name_or_path: str, overrides: list[str] | None = None, schema: type[C] = TrainConfig) -> C:
    """A train preset by name (default, pretrain-350m, …) or a YAML file, with ``a.b=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = preset_path("train", name_or_path)
    return build_config(load_yaml(path), overrides or [], schema)
