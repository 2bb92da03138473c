"""VPT-deep (Jia et al., ECCV 2022): learned prompt tokens in front of the patches at every image layer.

Before block 1 the N prompts are inserted after the class token; before every later block the previous
block's outputs at those N positions are dropped and the block's own prompts take their place. The class
token, which the image tower pools, attends to them throughout; the text tower is untouched.
"""

from __future__ import annotations

import torch
from torch import nn


class DeepPrompts(nn.Module):
    """N prompt vectors per image-tower block, inserted by forward pre-hooks on the blocks."""

    def __init__(self, layers: int, tokens: int, width: int, init_std: float):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(layers, tokens, width).normal_(0, init_std))

    def before_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        prompts = self.prompts[index].to(x.dtype).expand(len(x), -1, -1)
        kept = 1 if index == 0 else 1 + self.prompts.shape[1]
        return torch.cat([x[:, :1], prompts, x[:, kept:]], dim=1)


def add_vpt(model: nn.Module, prompt_tokens: int, init_std: float) -> nn.Parameter:
    """Freeze the model and learn VPT-deep prompts in the image tower; returns the prompt parameter."""
    visual = getattr(model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    if transformer is None or not getattr(transformer, "batch_first", False):
        raise ValueError(f"{type(model).__name__} has no batch-first open_clip ViT image tower")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise ValueError("VPT needs an image tower that pools the class token (pool_type 'tok', no attention pooler)")
    if prompt_tokens < 1:
        raise ValueError(f"VPT needs at least one prompt token, got {prompt_tokens}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    visual.deep_prompts = DeepPrompts(len(transformer.resblocks), prompt_tokens, transformer.width, init_std)

    def hook(index: int):
        def insert(block, args, kwargs):
            return (visual.deep_prompts.before_block(index, args[0]), *args[1:]), kwargs
        return insert

    for index, block in enumerate(transformer.resblocks):
        block.register_forward_pre_hook(hook(index), with_kwargs=True)
    return visual.deep_prompts.prompts
