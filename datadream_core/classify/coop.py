"""CoOp (Zhou et al., IJCV 2022): a learned context shared by all classes in front of each class name.

The prompt of class c is "[SOS] v_1 ... v_M name_c . [EOS]": M learned word vectors, then the class name
("class token at the end"), fed through the frozen text tower. The tokenizer sees M placeholder words in
the context's positions; the embedding layer swaps their embeddings for the learned vectors, so every
text path (open_clip's encode_text and ours on a truncated context) runs the prompts unchanged.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

PLACEHOLDER = "X"  # one BPE token; its embedding is never used


class ContextEmbedding(nn.Module):
    """The frozen token embedding with positions 1..M (after the start token) replaced by the learned context."""

    def __init__(self, base: nn.Embedding, context_tokens: int, init_std: float):
        super().__init__()
        self.base = base
        self.context = nn.Parameter(torch.empty(context_tokens, base.embedding_dim).normal_(0, init_std))

    @property
    def weight(self) -> torch.Tensor:
        """open_clip reads the embedding's weight (its dtype) in places; it is the frozen base's."""
        return self.base.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = self.base(tokens)
        length = self.context.shape[0]
        context = self.context.to(embedded.dtype).expand(len(tokens), -1, -1)
        return torch.cat([embedded[:, :1], context, embedded[:, 1 + length:]], dim=1)


def add_coop(model: nn.Module, context_tokens: int, init_std: float) -> nn.Parameter:
    """Freeze the model and learn an M-token context in the text tower; returns the context parameter."""
    if context_tokens < 1:
        raise ValueError(f"CoOp needs at least one context token, got {context_tokens}")
    if not isinstance(getattr(model, "token_embedding", None), nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding token_embedding: not an open_clip CLIP text tower")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.token_embedding = ContextEmbedding(model.token_embedding, context_tokens, init_std)
    return model.token_embedding.context


def coop_prompts(names: Sequence[str], context_tokens: int) -> list[str]:
    return [" ".join([PLACEHOLDER] * context_tokens + [f"{name}."]) for name in names]


def coop_tokens(tokenize: Callable[[list[str]], torch.Tensor], names: Sequence[str], context_tokens: int,
                context_length: int) -> torch.Tensor:
    """Tokenized CoOp prompts. The tokenizer silently cuts a prompt that is too long, so a prompt whose end token
    lands on the last position (cut, or exactly full) is an error rather than a wrong class name."""
    prompts = coop_prompts(names, context_tokens)
    tokens = tokenize(prompts)
    placeholder = tokenize([PLACEHOLDER])[0, 1]
    for name, prompt, row in zip(names, prompts, tokens):
        if not bool((row[1:1 + context_tokens] == placeholder).all()):
            raise ValueError(f"CoOp prompt for class '{name}' does not start with {context_tokens} placeholder tokens")
        if int(row.argmax()) >= context_length - 1:
            raise ValueError(f"CoOp prompt for class '{name}' ({context_tokens} context tokens + the name) does not fit"
                             f" in the text tower's context of {context_length} tokens: lower coop.context_tokens")
    return tokens
