"""A small but realistic project: an image classifier and a transformer block, as a team would
declare them in ``budgets.toml`` and test them with the ``budget`` marker."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinyCNN(nn.Module):
    """A CIFAR-sized classifier: conv stem, two residual-free stages, global pool, linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.stage2 = nn.Sequential(
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1, groups=2, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(images)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TransformerBlock(nn.Module):
    """A pre-norm decoder block written the way research code is: attention through
    ``F.scaled_dot_product_attention``, the MLP through ``x @ w`` on raw parameters."""

    def __init__(self, dim: int = 256, heads: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.w_in = nn.Parameter(torch.randn(dim, mlp_ratio * dim) * dim**-0.5)
        self.w_out = nn.Parameter(torch.randn(mlp_ratio * dim, dim) * (mlp_ratio * dim) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, dim // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(batch, tokens, dim))
        return x + F.gelu(self.norm2(x) @ self.w_in) @ self.w_out


def tiny_cnn(width: int = 16) -> TinyCNN:
    return TinyCNN(width=width)


def transformer_block(dim: int = 256, heads: int = 4) -> TransformerBlock:
    return TransformerBlock(dim=dim, heads=heads)


def block_inputs() -> torch.Tensor:
    return torch.randn(2, 64, 256)
