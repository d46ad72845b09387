"""Plain-PyTorch GPT-2 reference (GPT-2 small by default).

Token embedding ``wte`` + learned position embedding ``wpe`` -> ``depth`` pre-norm
blocks ``h`` (``ln_1`` -> causal self-attention with a fused ``c_attn`` qkv Linear
with bias and a ``c_proj`` output Linear; ``ln_2`` -> MLP ``c_fc`` (4x) ->
GELU(tanh approximation) -> ``c_proj``) -> final ``ln_f`` -> ``lm_head`` whose
weight is tied to ``wte.weight`` (so it is counted once by ``parameters()``).
All projections are ``nn.Linear`` (weights stored (out, in), i.e. transposed
with respect to the Conv1D layout of the original checkpoints).  Dropout omitted.
Input: token ids (B, T) with T <= n_positions; output: logits (B, T, vocab).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalSelfAttention", "MLP", "Block", "GPT2", "gpt2"]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.c_attn = nn.Linear(dim, 3 * dim, bias=True)
        self.c_proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, eps=1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, vocab=50257, n_positions=1024, dim=768, depth=12, heads=12):
        super().__init__()
        self.n_positions = n_positions
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(n_positions, dim)
        self.h = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim, eps=1e-5)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for block in self.h:  # GPT-2 scaled init of the residual-path output projections
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * depth))
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    def forward(self, idx):
        B, T = idx.shape
        assert T <= self.n_positions, f"sequence length {T} > n_positions {self.n_positions}"
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2(vocab=50257, n_positions=1024, dim=768, depth=12, heads=12):
    return GPT2(vocab, n_positions, dim, depth, heads)
