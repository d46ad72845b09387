"""Attention kernels on CUDA in half precision: sdpa and flash-attn (when installed) against the `math` reference
(fp32 accumulation), through `attention()` and through whole `mha` mixers. Skipped without CUDA."""
import pytest
import torch
from modelplay.mixers import AttentionBackendError, MultiHeadAttention, attention, attention_backend, flash_attn_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')]

TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}       # |out − ref| ≤ TOL · (1 + |ref|): one rounding of a value near 1
GRAD_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # max abs error of a gradient, relative to its largest entry
DTYPES = [pytest.param(torch.float16, id='fp16'), pytest.param(torch.bfloat16, id='bf16')]
BACKENDS = ['sdpa', pytest.param('flash', marks=pytest.mark.skipif(not flash_attn_available(), reason='flash-attn not installed'))]

CALLS = {  # name → (kv_heads, head_dim, attention kwargs)
    'plain': (8, 64, {}),
    'causal': (8, 64, dict(causal=True)),
    'window_causal': (8, 64, dict(causal=True, window=32)),
    'window': (8, 64, dict(window=32)),
    'window_1_causal': (8, 64, dict(causal=True, window=1)),
    'gqa': (2, 64, {}),
    'gqa_causal_window': (2, 128, dict(causal=True, window=48)),
    'mqa_causal': (1, 64, dict(causal=True)),
    'head_dim_256': (4, 256, dict(causal=True)),
}


def assert_close(out, ref, tol):
    err = (out.float() - ref.float()).abs() / (1 + ref.float().abs())
    assert err.max().item() <= tol, f"max error {err.max().item():.2e} (relative to 1 + |ref|) > {tol:.0e}"


def qkv(kv_heads, head_dim, dtype, n=200, seed=0):
    g = torch.Generator(device='cuda').manual_seed(seed)
    make = lambda h: torch.randn(2, h, n, head_dim, device='cuda', dtype=dtype, generator=g)
    return make(8), make(kv_heads), make(kv_heads)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', list(CALLS))
def test_attention_matches_math(case, backend, dtype):
    kv_heads, head_dim, kw = CALLS[case]
    q, k, v = qkv(kv_heads, head_dim, dtype)
    ref = attention(q, k, v, **kw, backend='math')
    out = attention(q, k, v, **kw, backend=backend)
    assert out.shape == q.shape and out.dtype == dtype
    assert_close(out, ref, TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', ['causal', 'window_causal', 'gqa_causal_window'])
def test_attention_gradients_match_math(case, backend, dtype):
    kv_heads, head_dim, kw = CALLS[case]
    inputs = [t.requires_grad_() for t in qkv(kv_heads, head_dim, dtype, n=128)]
    w = torch.randn(inputs[0].shape, device='cuda', dtype=dtype, generator=torch.Generator(device='cuda').manual_seed(1))
    def grads(name):
        for t in inputs: t.grad = None
        (attention(*inputs, **kw, backend=name).float() * w).sum().backward()
        return [t.grad.float() for t in inputs]
    for got, ref in zip(grads(backend), grads('math')):
        assert ((got - ref).abs().max() / ref.abs().max()).item() < GRAD_TOL[dtype]


MODULES = {  # name → (constructor kwargs, input shape)
    'causal_gqa_rope': (dict(heads=8, kv_heads=2, causal=True, rope='1d', grid=(96,)), (2, 96, 256)),
    'window_causal': (dict(heads=4, causal=True, window=16, grid=(96,)), (2, 96, 256)),
    'vit_rope_2d_prefix': (dict(heads=4, rope='2d', grid=(8, 8), prefix=1), (2, 65, 256)),
    'window_2d': (dict(heads=4, window=4, rope='2d', grid=(8, 8)), (2, 8, 8, 256)),
}


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', list(MODULES))
def test_mha_matches_math(case, backend, dtype):
    kw, shape = MODULES[case]
    torch.manual_seed(0)
    m = MultiHeadAttention(256, **kw, backend='math').to('cuda', dtype).eval()
    x = torch.randn(*shape, device='cuda', dtype=dtype)
    with torch.no_grad():
        ref = m(x)
        m.backend = backend
        out = m(x)
    assert out.shape == x.shape
    assert_close(out, ref, 2 * TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES)
def test_auto_on_cuda(dtype):
    q, k, v = qkv(2, 64, dtype)
    assert attention_backend(q, k, v, causal=True, window=16) == ('flash' if flash_attn_available() else 'sdpa')
    assert attention_backend(q, k, v, bias=torch.zeros(8, 200, 200, device='cuda', dtype=dtype)) == 'sdpa'
    assert attention_backend(*qkv(2, 12, dtype)) == 'sdpa'          # head size not a multiple of 8
    assert attention_backend(*(t.float() for t in (q, k, v))) == 'sdpa'


def test_rel_bias_never_goes_to_flash():
    m = MultiHeadAttention(64, heads=2, rel_bias=True, grid=(8, 8), backend='auto').to('cuda', torch.bfloat16)
    x = torch.randn(2, 8, 8, 64, device='cuda', dtype=torch.bfloat16)
    assert m(x).shape == x.shape
    m.backend = 'flash'
    with pytest.raises(AttentionBackendError, match='no additive bias'):
        m(x)


@pytest.mark.skipif(not flash_attn_available(), reason='flash-attn not installed')
def test_flash_dropout_trains():
    m = MultiHeadAttention(128, heads=2, causal=True, dropout=0.1, grid=(64,), backend='flash').to('cuda', torch.bfloat16).train()
    x = torch.randn(2, 64, 128, device='cuda', dtype=torch.bfloat16, requires_grad=True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all()
