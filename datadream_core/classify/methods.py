"""The classifier methods on one CLIP model: what each adds and trains, and the class prompts it reads.

lora: LoRA on the attention of both towers, class prompts from classes.csv (the paper's classifier).
coop: a learned text context in front of each class name (CoOp); vpt: learned image-tower prompts (VPT-deep)
with the classes.csv prompts. Everything else is frozen, so the trained state is the parameters that
require gradients, whichever the method.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from datadream_core.classify.coop import add_coop, coop_tokens
from datadream_core.classify.lora import add_lora
from datadream_core.classify.vpt import add_vpt
from datadream_core.data.table import ClassRow


# The keys of a method's own config section that reach its model code.
METHOD_OPTIONS = {"lora": (), "coop": ("context_tokens", "init_std"), "vpt": ("prompt_tokens", "init_std")}


def method_options(classify: Mapping, method: str) -> dict:
    """The method's own settings from a job's resolved `classify` settings (trainsets.method_settings)."""
    if method not in METHOD_OPTIONS:
        raise ValueError(f"unknown classifier method '{method}' (known: {', '.join(METHOD_OPTIONS)})")
    missing = [key for key in METHOD_OPTIONS[method] if key not in classify]
    if missing:
        raise ValueError(f"classifier settings for method '{method}' lack {missing}: pass them through"
                         " trainsets.method_settings(classify, method, shots)")
    return {key: classify[key] for key in METHOD_OPTIONS[method]}


def adapt_model(model: nn.Module, method: str, settings, options: Mapping) -> None:
    """Add the method's trainable parameters to `model` and freeze the rest."""
    if method == "lora":
        add_lora(model, settings.lora_targets, settings.lora_rank, settings.lora_alpha, settings.lora_dropout)
    elif method == "coop":
        add_coop(model, options["context_tokens"], options["init_std"])
    elif method == "vpt":
        add_vpt(model, options["prompt_tokens"], options["init_std"])
    else:
        raise ValueError(f"unknown classifier method '{method}' (known: lora, coop, vpt)")


def class_tokens(model: nn.Module, tokenize: Callable[[list[str]], torch.Tensor], classes: Sequence[ClassRow],
                 method: str, options: Mapping) -> torch.Tensor:
    """The token ids of one prompt per class, full context length."""
    if method == "coop":
        return coop_tokens(tokenize, [row.name for row in classes], options["context_tokens"],
                           int(model.positional_embedding.shape[0]))
    return tokenize([row.prompt for row in classes])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trained weights: every parameter that requires gradients."""
    return {name: value.detach().cpu().clone() for name, value in model.named_parameters() if value.requires_grad}


def load_trainable_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    expected = {name for name, value in model.named_parameters() if value.requires_grad}
    if set(state) != expected:
        raise ValueError(f"trained state does not match the model: {len(set(state) ^ expected)} names differ")
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if unexpected:
        raise ValueError(f"trained state names {sorted(unexpected)[:3]} are not in the model's state dict")
