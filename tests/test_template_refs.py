"""Independent reference check of the template presets (mnist/*, cifar10/*, cifar100/*).

Each reference below is plain torch.nn, written from the published architecture
descriptions (not from modelplay's source or config files). For every preset and data set
we check that `mp.build` gives the same trainable parameter count as the reference and that
both map a (2, C, H, W) batch to (2, classes) logits. The references' MNIST counts are also
checked against the published figures, which validates the references themselves.
"""
import math
from functools import lru_cache

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import modelplay as mp

DATASETS = {  # name: (in_chans, image_size, classes)
    'mnist': (1, 28, 10),
    'cifar10': (3, 32, 10),
    'cifar100': (3, 32, 100),
}


def n_trainable(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- sdn / mlp

class SDN(nn.Module):
    "flatten -> 3 x (Linear, BatchNorm1d, ReLU) -> Linear"
    def __init__(self, in_chans, image_size, classes, widths):
        super().__init__()
        layers, d = [nn.Flatten()], in_chans * image_size * image_size
        for w in widths:
            layers += [nn.Linear(d, w), nn.BatchNorm1d(w), nn.ReLU()]
            d = w
        layers.append(nn.Linear(d, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x): return self.net(x)


class MLP(nn.Module):
    "flatten -> 3 x (Linear, ReLU, Dropout) -> Linear"
    def __init__(self, in_chans, image_size, classes, widths=(256, 256, 256), drop=0.1):
        super().__init__()
        layers, d = [nn.Flatten()], in_chans * image_size * image_size
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU(), nn.Dropout(drop)]
            d = w
        layers.append(nn.Linear(d, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x): return self.net(x)


# ---------------------------------------------------------------------------- cnn

class CNN(nn.Module):
    def __init__(self, in_chans, image_size, classes, c1, c2, fc, drop=0.25):
        super().__init__()
        def stage(ci, co):
            return [nn.Conv2d(ci, co, 3, padding=1, bias=True), nn.BatchNorm2d(co), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*stage(in_chans, c1), *stage(c1, c2), nn.AdaptiveAvgPool2d(7), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c2 * 49, fc), nn.ReLU(), nn.Dropout(drop), nn.Linear(fc, classes))

    def forward(self, x): return self.head(self.features(x))


# ---------------------------------------------------------------------------- convnext v2

class LayerNormCF(nn.Module):
    "LayerNorm over the channel dim of a (B, C, H, W) tensor"
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    "Global response normalisation, channels-last input"
    def __init__(self, d):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.zeros(1, 1, 1, d)), nn.Parameter(torch.zeros(1, 1, 1, d))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d, bias=True)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.pw1, self.act, self.grn, self.pw2 = nn.Linear(d, 4 * d), nn.GELU(), GRN(4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(self.grn(self.act(self.pw1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    def __init__(self, in_chans, image_size, classes, depths, dims):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 2, stride=2, bias=True), LayerNormCF(dims[0]))
        stages = []
        for i, (n, d) in enumerate(zip(depths, dims)):
            layers = [] if i == 0 else [LayerNormCF(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, stride=2, bias=True)]
            layers += [ConvNeXtV2Block(d) for _ in range(n)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.norm, self.fc = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(self.norm(x.mean((2, 3))))


# ---------------------------------------------------------------------------- vit

class Attention(nn.Module):
    def __init__(self, e, heads):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.o = (nn.Linear(e, e) for _ in range(4))

    def forward(self, x):
        b, n, e = x.shape
        split = lambda t: t.view(b, n, self.h, e // self.h).transpose(1, 2)
        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.o(y.transpose(1, 2).reshape(b, n, e))


class EncoderBlock(nn.Module):
    def __init__(self, e, heads):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(e), Attention(e, heads)
        self.ln2, self.mlp = nn.LayerNorm(e), nn.Sequential(nn.Linear(e, 2 * e), nn.GELU(), nn.Linear(2 * e, e))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, in_chans, image_size, classes, e, depth, heads, patch=4):
        super().__init__()
        n = (image_size // patch) ** 2
        self.patch = nn.Conv2d(in_chans, e, patch, stride=patch, bias=True)
        self.pos = nn.Parameter(torch.zeros(1, n, e))
        self.cls = nn.Parameter(torch.zeros(1, 1, e))
        self.blocks = nn.Sequential(*(EncoderBlock(e, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(e)
        self.head = nn.Sequential(nn.Linear(e, e), nn.Tanh(), nn.Linear(e, classes))

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ---------------------------------------------------------------------------- efficientnet

B0_STAGES = [  # expand, channels, blocks, stride, kernel
    (1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3),
]


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, stride, k):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        layers += [nn.Conv2d(mid, mid, k, stride=stride, padding=k // 2, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        r = max(1, mid // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, r, 1, bias=True), nn.SiLU(),
                                nn.Conv2d(r, mid, 1, bias=True), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        y = self.project(y * self.se(y))
        return x + y if self.residual else y


class EfficientNet(nn.Module):
    def __init__(self, in_chans, image_size, classes, width, depth, drop=0.2):
        super().__init__()
        ch = lambda c: int(math.ceil(c * width / 8) * 8)
        reps = lambda n: int(math.ceil(n * depth))
        c = ch(32)
        layers = [nn.Conv2d(in_chans, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU()]
        for expand, cout, n, stride, k in B0_STAGES:
            cout = ch(cout)
            for i in range(reps(n)):
                layers.append(MBConv(c, cout, expand, stride if i == 0 else 1, k))
                c = cout
        head = ch(1280)
        layers += [nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head), nn.SiLU(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop), nn.Linear(head, classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x): return self.net(x)


# ---------------------------------------------------------------------------- table

# preset: (reference factory taking (in_chans, image_size, classes), published MNIST param count)
REFS = {
    'sdn_8k':           (lambda c, s, k: SDN(c, s, k, (10, 20, 10)), 8_470),
    'sdn_68k':          (lambda c, s, k: SDN(c, s, k, (64, 128, 64)), 67_978),
    'mlp':              (lambda c, s, k: MLP(c, s, k), 335_114),
    'cnn_8k':           (lambda c, s, k: CNN(c, s, k, 3, 6, 25), 7_851),
    'cnn_68k':          (lambda c, s, k: CNN(c, s, k, 8, 20, 68), 68_994),
    'cnn_421k':         (lambda c, s, k: CNN(c, s, k, 32, 64, 128), 421_834),
    'convnext_18k':     (lambda c, s, k: ConvNeXtV2(c, s, k, (1, 1, 1, 1), (4, 8, 16, 32)), 18_002),
    'convnext_73k':     (lambda c, s, k: ConvNeXtV2(c, s, k, (1, 1, 2, 1), (8, 16, 32, 64)), 73_402),
    'convnext_288k':    (lambda c, s, k: ConvNeXtV2(c, s, k, (2, 2, 4, 2), (12, 24, 48, 96)), 288_118),
    'convnext_725k':    (lambda c, s, k: ConvNeXtV2(c, s, k, (3, 3, 6, 3), (16, 32, 64, 128)), 724_938),
    'vit_38k':          (lambda c, s, k: ViT(c, s, k, 32, 4, 4), 37_770),
    'vit_210k':         (lambda c, s, k: ViT(c, s, k, 64, 6, 4), 210_058),
    'vit_821k':         (lambda c, s, k: ViT(c, s, k, 128, 6, 8), 821_514),
    'efficientnet_66k': (lambda c, s, k: EfficientNet(c, s, k, 0.043, 0.7), 66_016),
    'efficientnet_7m':  (lambda c, s, k: EfficientNet(c, s, k, 1.0, 1.0), 7_155_082),
}

CASES = [pytest.param(ds, x, id=f'{ds}/{x}') for ds in DATASETS for x in REFS]


@lru_cache(maxsize=None)
def _built(ds, x): return mp.build(f'{ds}/{x}')


@lru_cache(maxsize=None)
def _ref(ds, x):
    torch.manual_seed(0)
    return REFS[x][0](*DATASETS[ds])


@pytest.mark.parametrize('x', list(REFS))
def test_reference_matches_published_mnist_count(x):
    assert n_trainable(_ref('mnist', x)) == REFS[x][1]


@pytest.mark.parametrize('ds,x', CASES)
def test_param_count_matches_reference(ds, x):
    assert n_trainable(_built(ds, x)) == n_trainable(_ref(ds, x))


@pytest.mark.parametrize('ds,x', CASES)
def test_logits_shape(ds, x):
    c, s, k = DATASETS[ds]
    torch.manual_seed(0)
    xb = torch.randn(2, c, s, s)
    for m in (_built(ds, x), _ref(ds, x)):
        m.eval()
        with torch.no_grad():
            out = m(xb)
        assert out.shape == (2, k)
        assert torch.isfinite(out).all()
