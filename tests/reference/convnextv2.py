"""Plain-PyTorch ConvNeXt-V2 reference.

``stem``: 4x4/4 conv + channels-first LayerNorm (eps 1e-6).  Then four
``stages``; stage i > 0 starts with a ``downsample`` (LayerNorm, then 2x2/2
conv).  Block: depthwise 7x7 conv (padding 3) -> permute to channels-last ->
LayerNorm -> Linear dim->4dim -> GELU -> GRN -> Linear 4dim->dim -> permute back
-> residual add.  Drop path is omitted (identity).  Head: global average pool ->
LayerNorm -> Linear.

GRN (global response normalisation), channels-last input x of shape (B,H,W,C):
    Gx = ||x||_2 over (H, W);  Nx = Gx / (mean_C(Gx) + 1e-6)
    out = gamma * (x * Nx) + beta + x,   gamma, beta of shape (1, 1, 1, C).
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "GRN", "Block", "Stage", "ConvNeXtV2", "convnextv2",
           "convnextv2_atto", "convnextv2_nano", "convnextv2_tiny", "convnextv2_base"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of a (B, C, H, W) tensor."""

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim, eps=eps)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class Stage(nn.Module):
    def __init__(self, cin, dim, depth, downsample):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, dim, 2, stride=2))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ConvNeXtV2(nn.Module):
    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes=1000, in_chans=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        self.stages = nn.Sequential(*[
            Stage(dims[max(i - 1, 0)], dims[i], depths[i], downsample=i > 0) for i in range(len(depths))])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))
        x = x.mean(dim=(2, 3))
        return self.head(self.norm(x))


def convnextv2(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes=1000, in_chans=3):
    return ConvNeXtV2(depths, dims, num_classes, in_chans)


def convnextv2_atto(**kw):
    return convnextv2((2, 2, 6, 2), (40, 80, 160, 320), **kw)


def convnextv2_nano(**kw):
    return convnextv2((2, 2, 8, 2), (80, 160, 320, 640), **kw)


def convnextv2_tiny(**kw):
    return convnextv2((3, 3, 9, 3), (96, 192, 384, 768), **kw)


def convnextv2_base(**kw):
    return convnextv2((3, 3, 27, 3), (128, 256, 512, 1024), **kw)
