"""The next-item model: a small SASRec-style causal transformer over item sequences.

One model serves both catalogs over a namespaced vocabulary (index 0 is padding, then
the ``video:`` items, then the ``music:`` items). Sequences are left-padded to a fixed
``max_len`` so a row's output never depends on the other rows of its batch. The output
embedding is tied to the input item embedding; scores for items outside the request's
catalog are masked by the caller (``catalog_mask``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters, stored next to the weights as JSON."""

    vocab_size: int
    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.3

    def to_json(self) -> dict[str, int | float]:
        return asdict(self)


def inverted_dropout(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Inverted dropout in training mode; a uniform draw is about twice as fast as
    ``F.dropout``'s Bernoulli draw on CPU, and dropout dominated the training time."""
    p = module.dropout
    if not module.training or p == 0.0:
        return x
    return x * (torch.rand_like(x) >= p) / (1.0 - p)


class CausalBlock(nn.Module):
    """Pre-norm transformer block: masked self-attention then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` is ``[B, L, D]``; ``bias`` is ``[B, 1, L, L]``: 0 where i may see j, else -inf."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + inverted_dropout(self.proj(attn.transpose(1, 2).reshape(batch, length, dim)), self)
        return x + inverted_dropout(self.ffn(self.norm2(x)), self)


class SequenceRecommender(nn.Module):
    """Scores every vocabulary item as the next item of a left-padded item sequence."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.vocab_size, config.dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.blocks = nn.ModuleList(CausalBlock(config.dim, config.heads, config.dropout) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = config.dropout
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state ``[B, L, D]`` after each position of ``seq`` (``[B, max_len]``)."""
        if seq.shape[1] != self.config.max_len:
            raise ValueError(f"sequences must be padded to {self.config.max_len}, got {seq.shape[1]}")
        valid = seq != PAD
        length = seq.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        # A padded query sees only itself, so no attention row is empty (no NaN).
        allowed = ((causal & valid[:, None, :]) | eye)[:, None]
        bias = torch.zeros(allowed.shape, device=seq.device).masked_fill(~allowed, float("-inf"))
        positions = torch.arange(length, device=seq.device)
        x = self.item_emb(seq) * self.config.dim**0.5 + self.pos_emb(positions)
        x = inverted_dropout(x, self) * valid[..., None]
        for block in self.blocks:
            x = block(x, bias) * valid[..., None]
        return self.norm(x)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary for hidden states ``[..., D]``."""
        return hidden @ self.item_emb.weight.T

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Next-item logits ``[B, vocab_size]`` after the last position of each row."""
        return self.scores(self.encode(seq)[:, -1])
