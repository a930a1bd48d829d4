"""The models the train and infer workloads run: a GPT-style decoder and a small MLP, in plain torch.

The decoder is the usual pre-LayerNorm transformer (causal ``scaled_dot_product_attention``, GELU
MLP of 4x width, learned positions, an untied output head), so its FLOP count is PaLM's: per token
trained, ``6 N + 12 L H Q T`` (Chowdhery et al. 2022, appendix B), where N counts the parameters
that take part in matrix multiplies (every one but the token and position embeddings, which are
lookups; the head is a real matmul, hence untied), and the second term is attention's score and
value products over the sequence. A forward pass alone is a third of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn


@dataclass(frozen=True, slots=True)
class GPTConfig:
    layers: int = 2
    width: int = 64  # d_model
    heads: int = 4
    seq_len: int = 32
    vocab: int = 256
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if min(self.layers, self.width, self.heads, self.seq_len, self.vocab, self.mlp_ratio) < 1:
            raise ValueError(f"every GPT size must be at least 1: {self}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GPTConfig:
        """The config named by a workload's parameter set (its other keys are ignored)."""
        return cls(**{k: int(params[k]) for k in asdict(cls()) if k in params})


def non_embedding_params(cfg: GPTConfig) -> int:
    """N by hand: per layer two LayerNorms, QKV and output projections, the two MLP matrices (all
    with biases); the final LayerNorm; the untied head (no bias)."""
    d, f = cfg.width, cfg.width * cfg.mlp_ratio
    per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    return cfg.layers * per_layer + 2 * d + d * cfg.vocab


def train_flops_per_token(cfg: GPTConfig) -> float:
    """PaLM's training FLOPs per token: 6 N + 12 L H Q T (forward and backward)."""
    n = non_embedding_params(cfg)
    return 6.0 * n + 12.0 * cfg.layers * cfg.heads * cfg.head_dim * cfg.seq_len


def forward_flops_per_token(cfg: GPTConfig) -> float:
    """A forward pass is a third of training's (backward costs twice the forward)."""
    return train_flops_per_token(cfg) / 3.0


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.up = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    """Decoder-only language model: tokens (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.width)
        self.pos = nn.Embedding(cfg.seq_len, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab, bias=False)
        self.apply(_init)

    def non_embedding_params(self) -> int:
        embeddings = self.tok.weight.numel() + self.pos.weight.numel()
        return sum(p.numel() for p in self.parameters()) - embeddings

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _init(m: nn.Module) -> None:
    # GPT-2's initialisation: small normal weights, zero biases (a stable start for short runs).
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


class MLP(nn.Module):
    """A small multilayer perceptron: the quick inference suite's model (fast, and all Linear
    layers, so dynamic int8 quantization applies to all of it)."""

    def __init__(self, inputs: int = 256, hidden: int = 512, outputs: int = 64, layers: int = 3) -> None:
        super().__init__()
        sizes = [inputs] + [hidden] * (layers - 1) + [outputs]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            mods.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                mods.append(nn.GELU())
        self.net = nn.Sequential(*mods)
        self.inputs = inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def flops_per_sample(self) -> float:
        """Forward FLOPs: two per weight (multiply and add)."""
        return 2.0 * sum(m.weight.numel() for m in self.net if isinstance(m, nn.Linear))
