"""Tests for the plain-PyTorch reference models: exact parameter counts,
forward shapes on tiny configs, and ResNet-18 FLOPs."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from .convnextv2 import convnextv2
from .gpt import gpt2
from .llama import llama
from .resnet import resnet18, resnet50, resnet101
from .vit import vit


def n_params(model):
    """Trainable parameters; shared (tied) tensors are counted once by parameters()."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def on_meta(fn, *args, **kw):
    with torch.device("meta"):
        return fn(*args, **kw)


@pytest.mark.parametrize("fn,kw,expected", [
    (resnet18, {}, 11_689_512),
    (resnet50, {}, 25_557_032),
    (resnet101, {}, 44_549_160),
    (vit, dict(dim=384, depth=12, heads=6), 22_050_664),
    (vit, {}, 86_567_656),
    (vit, dict(dim=1024, depth=24, heads=16), 304_326_632),
    (convnextv2, {}, 28_635_496),
    (gpt2, {}, 124_439_808),
    (llama, {}, 6_738_415_616),
], ids=["resnet18", "resnet50", "resnet101", "vit_s16", "vit_b16", "vit_l16",
        "convnextv2_tiny", "gpt2_small", "llama_7b"])
def test_param_count(fn, kw, expected):
    model = on_meta(fn, **kw)
    assert n_params(model) == expected


def test_gpt2_lm_head_tied():
    model = on_meta(gpt2)
    assert model.lm_head.weight is model.wte.weight


def test_resnet_forward_shape():
    torch.manual_seed(0)
    for fn in (resnet18, resnet50):
        model = fn(num_classes=10, widths=(8, 16, 32, 64)).eval()
        with torch.no_grad():
            y = model(torch.randn(2, 3, 32, 32))
        assert y.shape == (2, 10)
        assert torch.isfinite(y).all()


def test_vit_forward_shape():
    torch.manual_seed(0)
    model = vit(image_size=32, patch=8, dim=32, depth=2, heads=4, num_classes=10).eval()
    assert model.pos_embed.shape == (1, 1 + 16, 32)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()


def test_convnextv2_forward_shape():
    torch.manual_seed(0)
    model = convnextv2(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64), num_classes=10).eval()
    for p in model.parameters():  # GRN gamma/beta start at zero; make GRN non-trivial
        if p.dim() == 4 and p.shape[:3] == (1, 1, 1):
            torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()


def _check_causal(model, vocab, T=16):
    idx = torch.randint(0, vocab, (2, T))
    with torch.no_grad():
        y = model(idx)
        idx2 = idx.clone()
        idx2[:, -1] = (idx2[:, -1] + 1) % vocab
        y2 = model(idx2)
    assert y.shape == (2, T, vocab)
    assert torch.isfinite(y).all()
    # changing the last token must not change earlier logits
    torch.testing.assert_close(y[:, :-1], y2[:, :-1])
    assert not torch.allclose(y[:, -1], y2[:, -1])


def test_gpt2_forward_shape_and_causality():
    torch.manual_seed(0)
    model = gpt2(vocab=101, n_positions=32, dim=32, depth=2, heads=4).eval()
    _check_causal(model, 101)


def test_llama_forward_shape_and_causality():
    torch.manual_seed(0)
    model = llama(vocab=101, dim=32, depth=2, heads=4, hidden=64, max_seq_len=32).eval()
    assert n_params(model) == 101 * 32 * 2 + 2 * (4 * 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32
    _check_causal(model, 101)


def test_llama_rope_is_relative():
    from .llama import apply_rope, rope_tables
    torch.manual_seed(0)
    d = 16
    cos, sin = rope_tables(d, 32)
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)
    def score(m, n):
        return (apply_rope(q, cos[m:m + 1], sin[m:m + 1]) * apply_rope(k, cos[n:n + 1], sin[n:n + 1])).sum()
    torch.testing.assert_close(score(5, 2), score(13, 10))
    torch.testing.assert_close(score(0, 0), (q * k).sum())


def test_resnet18_flops():
    model = resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    flops = counter.get_total_flops()
    print(f"resnet18 forward FLOPs @1x3x224x224: {flops}")
    assert abs(flops - 3.64e9) / 3.64e9 < 0.01
