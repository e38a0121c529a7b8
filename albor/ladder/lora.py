"""LoRA adapters on Albor's decoder through peft, and their merge into plain weights (contract ``lora``).

peft's ``inject_adapter_in_model`` replaces the named ``nn.Linear`` modules of the decoder in place,
so the model stays a ``Decoder`` (its blocks, config and kernels as before) and the trainer, the
checkpoints and evaluation take it as they are. ``merge_lora`` folds each adapter into its base
weight, W + (α/r)·B·A, with peft's own layer merge, and puts the plain ``nn.Linear`` back: the result
loads like any checkpoint of the base model.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from albor.config import Strict

TARGETS = ("qkv", "out", "gate_up", "down")  # every projection of every block; the embedding and head stay frozen


class LoraSettings(Strict):
    """The adapters: their rank, scale and the block projections they adapt."""

    r: int = Field(default=8, gt=0, description="rank of each adapter (A is r × in, B is out × r)")
    alpha: float = Field(default=16.0, gt=0, description="the update is scaled by alpha / r")
    targets: list[str] = Field(default=list(TARGETS), min_length=1, description=f"projections adapted: {TARGETS}")

    def model_post_init(self, _context: object) -> None:
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown:
            raise ValueError(f"targets: unknown projections {unknown}; choose from {list(TARGETS)}")


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("LoRA needs peft: pip install 'albor[ladder]'") from e
    return peft


def add_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Put LoRA adapters on ``model``'s target projections in place and freeze everything else.

    peft initialises A (Kaiming-uniform) and B = 0, so the adapted model computes exactly what the
    base did until B is trained.
    """
    peft = _peft()
    config = peft.LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=0.0, target_modules=list(settings.targets), bias="none"
    )
    peft.inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every adapted module of ``model`` with its dotted name."""
    layer = _peft().tuners.lora.LoraLayer
    return [(name, m) for name, m in model.named_modules() if isinstance(m, layer)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (peft's merge) and put the plain base module back, in place."""
    for name, module in lora_layers(model):
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad = True
    return model
