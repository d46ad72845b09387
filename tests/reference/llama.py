"""Plain-PyTorch LLaMA reference (LLaMA-1 7B by default).

``tok_embeddings`` -> ``depth`` pre-norm ``layers`` (``attention_norm`` RMSNorm ->
attention with separate bias-free ``wq``, ``wk``, ``wv``, ``wo`` and rotary
position embedding on q and k, causal via ``F.scaled_dot_product_attention``;
``ffn_norm`` RMSNorm -> SwiGLU ``feed_forward``: w2(silu(w1 x) * w3 x), all
bias-free) -> final ``norm`` (RMSNorm) -> untied bias-free ``output`` head.
RMSNorm has a weight only: x * rsqrt(mean(x^2) + eps) * weight, computed in fp32.

RoPE convention: **rotate-half** (the Hugging Face ``LlamaForCausalLM`` layout):
for head dim d, the pair rotated by angle pos * theta^(-2i/d) is
(x[i], x[i + d/2]), i < d/2; out = x * cos + rotate_half(x) * sin with
rotate_half(x) = cat(-x[d/2:], x[:d/2]).  (Meta's original code rotates the
interleaved pairs (x[2i], x[2i+1]); the two are equal up to a fixed permutation
of the q/k projection rows.)  theta = 10000.  cos/sin tables are non-persistent
buffers for ``max_seq_len`` positions, not parameters.

Input: token ids (B, T) with T <= max_seq_len; output: logits (B, T, vocab).
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSNorm", "Attention", "FeedForward", "TransformerBlock", "Llama", "llama",
           "rope_tables", "apply_rope"]


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_tables(head_dim, max_seq_len, theta=10000.0, device=None):
    """cos, sin of shape (max_seq_len, head_dim) in the rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(max_seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)              # (S, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)       # (S, d)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """x: (B, heads, T, d); cos/sin: (T, d)."""
    return (x * cos + rotate_half(x) * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.head_dim = dim // heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, hidden, norm_eps=1e-6):
        super().__init__()
        self.attention_norm = RMSNorm(dim, norm_eps)
        self.attention = Attention(dim, heads)
        self.ffn_norm = RMSNorm(dim, norm_eps)
        self.feed_forward = FeedForward(dim, hidden)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, vocab=32000, dim=4096, depth=32, heads=32, hidden=11008, max_seq_len=2048,
                 norm_eps=1e-6, rope_theta=10000.0):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([TransformerBlock(dim, heads, hidden, norm_eps) for _ in range(depth)])
        self.norm = RMSNorm(dim, norm_eps)
        self.output = nn.Linear(dim, vocab, bias=False)
        cos, sin = rope_tables(dim // heads, max_seq_len, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        B, T = idx.shape
        assert T <= self.max_seq_len, f"sequence length {T} > max_seq_len {self.max_seq_len}"
        x = self.tok_embeddings(idx)
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.output(self.norm(x))


def llama(vocab=32000, dim=4096, depth=32, heads=32, hidden=11008, max_seq_len=2048, norm_eps=1e-6):
    return Llama(vocab, dim, depth, heads, hidden, max_seq_len, norm_eps)
