"""``text_encoder``: a small transformer text encoder with seeded random weights (architecture test model).

Token embedding (vocab 1000, dim 64) + learned positions (up to 128), two pre-LayerNorm encoder layers written by
hand (4-head self-attention via matmul/softmax with an additive mask from ``attention_mask``, GELU MLP), a final
LayerNorm. Inputs ``input_ids`` and ``attention_mask`` are int64 ``(batch, seq)``; outputs are ``last_hidden_state``
``(batch, seq, 64)`` and ``pooled`` ``(batch, 64)``: the mean of the unmasked positions, L2-normalised.

``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` are deliberately not used: their fused fast paths do not
export cleanly. The sequence length may be exported as a dynamic dimension with no upper bound (positions past 128
reuse the last learned row).
"""

from __future__ import annotations

import math

import torch
from torch import nn

SEED = 0
VOCAB_SIZE = 1000
DIM = 64
HEADS = 4
LAYERS = 2
MLP_DIM = 128
MAX_POSITIONS = 128
SEQ_LEN = 16
#: additive bias for masked keys; large but finite so float16 and fused softmax kernels stay NaN-free
MASK_BIAS = -1e4


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                 # (b, h, s, hd)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        probs = torch.softmax(scores + mask_bias, dim=-1)                # mask_bias: (b, 1, 1, s)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, d)
        return self.out(ctx)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask_bias)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int = VOCAB_SIZE, dim: int = DIM, heads: int = HEADS, layers: int = LAYERS,
                 mlp_dim: int = MLP_DIM, max_positions: int = MAX_POSITIONS) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.max_positions = max_positions
        self.position_embedding = nn.Embedding(max_positions, dim)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, mlp_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # positions past MAX_POSITIONS reuse the last learned row; clamping (instead of slicing the table) keeps
        # torch.export from adding a ``seq <= MAX_POSITIONS`` guard when the sequence dim is dynamic
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).clamp(max=self.max_positions - 1)
        x = self.token_embedding(input_ids) + self.position_embedding(positions).unsqueeze(0)
        mask = attention_mask.to(x.dtype)                                 # (b, s): 1 keep, 0 pad
        mask_bias = ((1.0 - mask) * MASK_BIAS)[:, None, None, :]          # (b, 1, 1, s)
        for layer in self.layers:
            x = layer(x, mask_bias)
        hidden = self.norm(x)
        weights = mask.unsqueeze(-1)                                      # (b, s, 1)
        summed = (hidden * weights).sum(dim=1)
        count = weights.sum(dim=1).clamp(min=1.0)
        mean = summed / count
        pooled = mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        return hidden, pooled


def _init(model: TextEncoder, seed: int) -> None:
    """Seeded BERT-style init (normal std 0.02 weights, zero biases, random LayerNorm affine) on a local generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02 * 4)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.02)
            elif isinstance(m, nn.Embedding):
                scale = 0.5 if m is model.position_embedding else 1.0
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * scale)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.empty(m.weight.shape).uniform_(0.8, 1.2, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)


def build_model(seed: int = SEED) -> TextEncoder:
    """The zoo's text encoder in eval mode with seeded weights."""
    with torch.random.fork_rng(devices=[]):  # default layer init draws from the global RNG; restore it
        model = TextEncoder()
    _init(model, seed)
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` (12 real-looking ids then 4 padding zeros) and ``attention_mask`` (12 ones, 4 zeros), int64."""
    ids = [101, 487, 23, 768, 315, 42, 906, 154, 611, 7, 389, 102, 0, 0, 0, 0]
    input_ids = torch.tensor([ids], dtype=torch.int64)
    attention_mask = torch.tensor([[1] * 12 + [0] * 4], dtype=torch.int64)
    return input_ids, attention_mask
