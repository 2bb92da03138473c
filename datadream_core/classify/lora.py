"""LoRA on the attention of both open_clip towers, and the text tower run on a truncated context.

open_clip's blocks use torch's nn.MultiheadAttention with one fused in_proj_weight for q, k and v.
As in the released code (loralib MergedLinear + scaled_dot_product_attention), each adapted block's
attention is recomputed here with low-rank updates added to the chosen projections; the pretrained
weights are shared, not copied, so their state-dict names do not change.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

LORA_TARGETS = ("q", "k", "v", "out")


class LowRank(nn.Module):
    """x -> B(A x); B starts at zero so an adapted model starts equal to the pretrained one."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # loralib's (and nn.Linear's) init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.A), self.B)


class LoRAMultiheadAttention(nn.Module):
    """Batch-first self-attention with the parameters of an nn.MultiheadAttention plus LoRA updates."""

    def __init__(self, base: nn.MultiheadAttention, targets: Iterable[str], rank: int, alpha: float, dropout: float):
        super().__init__()
        if not base.batch_first or base.in_proj_weight is None:
            raise ValueError("LoRA attention needs a batch-first nn.MultiheadAttention with a fused in_proj_weight")
        unknown = set(targets) - set(LORA_TARGETS)
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)} (known: {', '.join(LORA_TARGETS)})")
        self.num_heads = base.num_heads
        self.attention_dropout = base.dropout
        self.in_proj_weight = base.in_proj_weight
        self.in_proj_bias = base.in_proj_bias
        self.out_proj = base.out_proj
        width = base.embed_dim
        self.lora = nn.ModuleDict({name: LowRank(width, width, rank) for name in LORA_TARGETS if name in targets})
        self.lora_dropout = nn.Dropout(dropout)
        self.scale = alpha / rank

    def forward(self, query, key, value, need_weights: bool = False, attn_mask: torch.Tensor | None = None):
        """Called as open_clip calls nn.MultiheadAttention; returns (output, None) as it does without weights."""
        if key is not query or value is not query:
            raise ValueError("LoRA attention supports self-attention only")
        batch, length, width = query.shape
        projections = dict(zip("qkv", F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)))
        # One dropout mask for the fused q/k/v input, as loralib's MergedLinear does.
        dropped = self.lora_dropout(query)
        for name in "qkv":
            if name in self.lora:
                projections[name] = projections[name] + self.scale * self.lora[name](dropped)
        q, k, v = (projections[name].view(batch, length, self.num_heads, -1).transpose(1, 2) for name in "qkv")
        mask = attn_mask.to(q.dtype) if attn_mask is not None and attn_mask.is_floating_point() else attn_mask
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.attention_dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        out = self.out_proj(attended)
        if "out" in self.lora:
            out = out + self.scale * self.lora["out"](self.lora_dropout(attended))
        return out, None


def _towers(model: nn.Module) -> dict[str, nn.Module]:
    """The two transformers of an open_clip CLIP model, keyed by their attribute path."""
    visual = getattr(getattr(model, "visual", None), "transformer", None)
    text = getattr(model, "transformer", None)
    if visual is None or text is None or not hasattr(model, "token_embedding"):
        raise ValueError(f"{type(model).__name__} is not an open_clip CLIP model with ViT image and text transformers")
    return {"visual.transformer": visual, "transformer": text}


def add_lora(model: nn.Module, targets: Iterable[str], rank: int, alpha: float, dropout: float) -> list[str]:
    """Adapt the attention of every residual block of both towers; freeze everything but LoRA.

    Returns the names of the adapted attention modules.
    """
    targets = tuple(targets)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapted = []
    for prefix, tower in _towers(model).items():
        for index, block in enumerate(tower.resblocks):
            if not isinstance(block.attn, nn.MultiheadAttention):
                raise ValueError(f"{prefix}.resblocks.{index}.attn is {type(block.attn).__name__}, not nn.MultiheadAttention")
            block.attn = LoRAMultiheadAttention(block.attn, targets, rank, alpha, dropout)
            adapted.append(f"{prefix}.resblocks.{index}.attn")
    return adapted


def truncate_context(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns after the last end-of-text token of any prompt.

    With a causal mask, positions up to the pooled end token never attend to later ones, so the
    pooled features are unchanged while the text tower does a fraction of the work.
    """
    pool = getattr(model, "text_pool_type", "argmax")
    if pool == "argmax":
        end = tokens.argmax(dim=-1)
    elif pool == "eos":
        end = (tokens == model.text_eos_id).int().argmax(dim=-1)
    else:
        return tokens
    return tokens[:, : int(end.max()) + 1]


def encode_text(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip CLIP.encode_text for a context of any length up to the model's own."""
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
