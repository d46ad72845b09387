"""Plain-PyTorch Vision Transformer reference (ViT, timm-style layout).

Conv patch embedding (with bias) -> prepend a ``cls_token`` -> add a learned
``pos_embed`` of length 1 + num_patches -> ``depth`` pre-norm blocks
(LayerNorm eps 1e-6; attention with one fused ``qkv`` Linear with bias and a
``proj`` Linear; MLP ``fc1`` -> GELU (exact erf) -> ``fc2``) -> final ``norm``
-> ``head`` applied to the cls token.  Attention uses
``F.scaled_dot_product_attention``.  Dropout / drop-path are omitted.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbed", "Attention", "Mlp", "Block", "VisionTransformer", "vit",
           "vit_small_patch16", "vit_base_patch16", "vit_large_patch16"]


class PatchEmbed(nn.Module):
    def __init__(self, image_size=224, patch=16, in_chans=3, dim=768):
        super().__init__()
        self.num_patches = (image_size // patch) ** 2
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, dim)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, image_size=224, patch=16, dim=768, depth=12, heads=12, mlp_ratio=4,
                 num_classes=1000, in_chans=3):
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(image_size=224, patch=16, dim=768, depth=12, heads=12, mlp_ratio=4, num_classes=1000, in_chans=3):
    return VisionTransformer(image_size, patch, dim, depth, heads, mlp_ratio, num_classes, in_chans)


def vit_small_patch16(**kw):
    return vit(dim=384, depth=12, heads=6, **kw)


def vit_base_patch16(**kw):
    return vit(dim=768, depth=12, heads=12, **kw)


def vit_large_patch16(**kw):
    return vit(dim=1024, depth=24, heads=16, **kw)
