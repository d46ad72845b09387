"""Attention kernels: every backend that runs here agrees with the `math` reference, through `attention()` and through whole
mixers; `auto` never picks a kernel that cannot serve a call; a forced kernel that cannot serve a call is an error."""
import inspect, logging
from types import SimpleNamespace
import pytest
import torch
import modelplay.mixers as mixers
from modelplay.mixers import (AttentionBackendError, Linformer, MultiHeadAttention, attention, attention_backend,
                              flash_attn_available, flash_problems)
from modelplay.registry import ModelplayError

# flash never serves fp32, so on fp32 tensors only sdpa (directly or through auto) runs besides the reference
BACKENDS = ['sdpa', 'auto']
B, H, N, D = 2, 4, 10, 8


def qkv(kv_heads=H, n=N, m=None, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    return (torch.randn(B, H, n, d, generator=g), torch.randn(B, kv_heads, m, d, generator=g),
            torch.randn(B, kv_heads, m, d, generator=g))


def rand_bias(shape, seed=1): return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


CALLS = {  # name → (qkv kwargs, attention kwargs)
    'plain': ({}, {}),
    'causal': ({}, dict(causal=True)),
    'window_causal': ({}, dict(causal=True, window=3)),
    'window': ({}, dict(window=3)),
    'window_1_causal': ({}, dict(causal=True, window=1)),
    'window_full': ({}, dict(causal=True, window=N)),
    'gqa': (dict(kv_heads=2), {}),
    'gqa_causal_window': (dict(kv_heads=2), dict(causal=True, window=4)),
    'mqa': (dict(kv_heads=1), dict(causal=True)),
    'bias': ({}, dict(bias=rand_bias((H, N, N)))),
    'bias_causal_window_gqa': (dict(kv_heads=2), dict(bias=rand_bias((H, N, N)), causal=True, window=3)),
    'bias_keys_only': ({}, dict(bias=rand_bias((B, 1, 1, N)))),
    'bool_mask': ({}, dict(bias=torch.arange(N)[None, :] < torch.tensor([[7], [10]]).view(B, 1, 1, 1))),
    'bool_mask_causal': ({}, dict(bias=torch.ones(N, N, dtype=torch.bool).tril(2), causal=True)),
    'cross_length': (dict(m=6), {}),
    'cross_length_gqa_bias': (dict(m=6, kv_heads=1), dict(bias=rand_bias((H, N, 6)))),
    'eval_ignores_dropout': ({}, dict(dropout=0.5, training=False)),
}


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', list(CALLS))
def test_attention_matches_math(case, backend):
    shapes, kw = CALLS[case]
    q, k, v = qkv(**shapes)
    ref = attention(q, k, v, **kw, backend='math')
    out = attention(q, k, v, **kw, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out - ref).abs().max().item() < 1e-5


def loop_reference(q, k, v, causal, window):
    "Attention one query at a time, with the window rule written out: j ≤ i when causal, |i − j| < window."
    out = torch.empty_like(q)
    rep = q.shape[1] // k.shape[1]
    for i in range(q.shape[2]):
        js = [j for j in range(k.shape[2]) if (not causal or j <= i) and (window is None or abs(i - j) < window)]
        kk, vv = k.repeat_interleave(rep, 1)[:, :, js], v.repeat_interleave(rep, 1)[:, :, js]
        p = (q[:, :, i:i + 1] @ kk.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
        out[:, :, i:i + 1] = p @ vv
    return out


@pytest.mark.parametrize('causal,window', [(False, None), (True, None), (True, 1), (True, 3), (False, 1), (False, 3), (False, N)])
def test_math_is_the_documented_semantics(causal, window):
    q, k, v = qkv(kv_heads=2)
    got = attention(q, k, v, causal=causal, window=window, backend='math')
    assert (got - loop_reference(q, k, v, causal, window)).abs().max().item() < 1e-5


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('window', [1, 2, 5, N])
def test_flash_window_size_is_the_same_rule(causal, window):
    "flash-attn lets query i see keys i − left ≤ j ≤ i + right (and j ≤ i when causal); our mapping gives the same mask."
    left, right = mixers._flash_window(causal, window)
    i, j = torch.arange(N)[:, None], torch.arange(N)[None, :]
    flash = (j >= i - left) & (j <= i + right) & ((j <= i) if causal else True)
    assert torch.equal(flash, mixers._keep_mask(N, N, causal, window, 'cpu'))
    assert mixers._flash_window(causal, None) == (-1, -1)


MODULES = {  # name → (constructor kwargs, input shape)
    'plain': (dict(heads=4, grid=(12,)), (2, 12, 16)),
    'causal': (dict(heads=4, causal=True, grid=(12,)), (2, 12, 16)),
    'window_causal': (dict(heads=4, causal=True, window=4, grid=(12,)), (2, 12, 16)),
    'window': (dict(heads=4, window=4, grid=(12,)), (2, 12, 16)),
    'gqa': (dict(heads=4, kv_heads=2, causal=True, grid=(12,)), (2, 12, 16)),
    'mqa': (dict(heads=4, kv_heads=1, grid=(12,)), (2, 12, 16)),
    'rope_1d': (dict(heads=2, rope='1d', causal=True, grid=(12,)), (2, 12, 16)),
    'rope_1d_prefix': (dict(heads=2, rope='1d', grid=(12,), prefix=1), (2, 13, 16)),
    'rope_2d': (dict(heads=2, rope='2d', grid=(4, 4)), (2, 4, 4, 16)),
    'rel_bias': (dict(heads=2, rel_bias=True, grid=(4, 4)), (2, 4, 4, 16)),
    'rel_bias_prefix': (dict(heads=2, rel_bias=True, rope='2d', grid=(4, 4), prefix=1), (2, 17, 16)),
    'window_2d': (dict(heads=2, window=2, grid=(4, 4)), (2, 4, 4, 16)),
    'window_2d_rel_rope_gqa': (dict(heads=4, kv_heads=2, window=2, rel_bias=True, rope='2d', grid=(4, 4)), (2, 4, 4, 16)),
    'window_2d_rect': (dict(heads=2, window=2, rel_bias=True, grid=(2, 6)), (2, 2, 6, 16)),
    'causal_2d': (dict(heads=2, causal=True, rope='2d', grid=(4, 4)), (2, 4, 4, 16)),
    'no_bias_head_dim': (dict(heads=2, head_dim=8, qkv_bias=False, out_bias=False, grid=(12,)), (2, 12, 16)),
}


def grads(m, x, backend):
    m.backend = backend
    x = x.clone().requires_grad_()
    y = m(x)
    (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
    g = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    return y.detach(), x.grad, g


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', list(MODULES))
def test_mha_matches_math(case, backend):
    kw, shape = MODULES[case]
    torch.manual_seed(0)
    m = MultiHeadAttention(16, **kw, backend='math')
    x = torch.randn(*shape)
    y_ref, gx_ref, g_ref = grads(m, x, 'math')
    y, gx, g = grads(m, x, backend)
    assert y.shape == x.shape
    assert (y - y_ref).abs().max().item() < 1e-5
    assert (gx - gx_ref).abs().max().item() < 1e-5
    for n in g: assert (g[n] - g_ref[n]).abs().max().item() < 1e-4, n


def test_local_windows_do_not_see_each_other():
    "With window=2 on a 4×4 grid, a token in the top-left window is unaffected by a change in the bottom-right one."
    torch.manual_seed(0)
    m = MultiHeadAttention(16, heads=2, window=2, grid=(4, 4)).eval()
    x = torch.randn(1, 4, 4, 16)
    x2 = x.clone(); x2[0, 3, 3] += 5
    y, y2 = m(x), m(x2)
    assert torch.allclose(y[0, :2, :2], y2[0, :2, :2], atol=1e-6)
    assert not torch.allclose(y[0, 2:, 2:], y2[0, 2:, 2:], atol=1e-3)


@pytest.mark.parametrize('backend', BACKENDS)
def test_linformer_matches_math(backend):
    torch.manual_seed(0)
    m = Linformer(16, heads=4, k=5, grid=(4, 4), prefix=1, backend='math')
    x = torch.randn(2, 17, 16)
    y_ref, gx_ref, _ = grads(m, x, 'math')
    y, gx, _ = grads(m, x, backend)
    assert (y - y_ref).abs().max().item() < 1e-5 and (gx - gx_ref).abs().max().item() < 1e-5


# --- choosing a kernel -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('case', list(CALLS))
def test_auto_on_cpu_is_sdpa(case):
    shapes, kw = CALLS[case]
    assert attention_backend(*qkv(**shapes), **kw) == 'sdpa'


def fake(shape, dtype=torch.float16, cuda=True):
    "Just enough of a tensor for `flash_problems`: device, dtype, shape."
    return SimpleNamespace(shape=shape, dtype=dtype, is_cuda=cuda, device=torch.device('cuda' if cuda else 'cpu'))


@pytest.fixture
def flash_here(monkeypatch):
    "Pretend flash-attn is installed on an sm90 GPU, so auto's choice is what is tested."
    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1)): ...
    monkeypatch.setattr(mixers, '_flash_func', lambda: flash_attn_func)
    monkeypatch.setattr(mixers, '_flash_has_window', lambda: True)
    monkeypatch.setattr(mixers.torch.cuda, 'get_device_capability', lambda device=None: (9, 0))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_auto_picks_flash_when_it_can(flash_here, dtype):
    q, kv = fake((2, 8, 128, 64), dtype), fake((2, 2, 128, 64), dtype)
    assert attention_backend(q, kv, kv) == 'flash'
    assert attention_backend(q, kv, kv, causal=True, window=16) == 'flash'


@pytest.mark.parametrize('what,q,bias', [
    ('bias', fake((2, 8, 128, 64)), torch.zeros(8, 128, 128)),
    ('fp32', fake((2, 8, 128, 64), torch.float32), None),
    ('cpu', fake((2, 8, 128, 64), cuda=False), None),
    ('head_dim_12', fake((2, 8, 128, 12)), None),
    ('head_dim_512', fake((2, 8, 128, 512)), None),
])
def test_auto_never_picks_flash_when_it_cannot(flash_here, what, q, bias):
    assert attention_backend(q, q, q, bias=bias) == 'sdpa'
    assert len(flash_problems(q, q, q, bias=bias)) == 1


def test_flash_problems_without_the_package(flash_here, monkeypatch):
    monkeypatch.setattr(mixers, '_flash_func', lambda: None)
    q = fake((2, 8, 16, 64))
    assert flash_problems(q, q, q) == ['the flash-attn package is not installed (pip install flash-attn)']
    assert attention_backend(q, q, q) == 'sdpa'


def test_forcing_flash_on_cpu_raises():
    q, k, v = qkv()
    with pytest.raises(AttentionBackendError, match=r'float32 on cpu') as e:
        attention(q, k, v, backend='flash')
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, ModelplayError)
    with pytest.raises(AttentionBackendError, match='float32 on cpu'):
        attention_backend(q, k, v, backend='flash')
    m = MultiHeadAttention(16, heads=2, backend='flash')
    with pytest.raises(AttentionBackendError, match='flash cannot serve this call'):
        m(torch.randn(1, 4, 16))


def test_forcing_flash_with_bias_says_so(flash_here):
    q = fake((2, 8, 16, 64))
    with pytest.raises(AttentionBackendError, match='no additive bias'):
        attention_backend(q, q, q, bias=torch.zeros(8, 16, 16), backend='flash')


def test_unknown_backend():
    with pytest.raises(AttentionBackendError, match="did you mean 'math'"):
        attention(*qkv(), backend='maths')


def test_default_backend_is_the_setting(monkeypatch):
    q, k, v = qkv()
    monkeypatch.setenv('MODELPLAY_ATTENTION', 'flash')
    with pytest.raises(AttentionBackendError, match='float32 on cpu'): attention(q, k, v)
    with pytest.raises(AttentionBackendError): MultiHeadAttention(16, heads=2)(torch.randn(1, 4, 16))
    monkeypatch.setenv('MODELPLAY_ATTENTION', 'math')
    assert attention_backend(q, k, v, backend=None) == 'math'
    assert MultiHeadAttention(16, heads=2).backend == 'math'
    assert MultiHeadAttention(16, heads=2, backend='sdpa').backend == 'sdpa'


def test_auto_logs_one_line(caplog):
    q, k, v = qkv()
    with caplog.at_level(logging.DEBUG, logger='modelplay.attention'):
        attention(q, k, v, backend='auto')
        attention(q, k, v, backend='sdpa')
    lines = [r.getMessage() for r in caplog.records if r.name == 'modelplay.attention']
    assert len(lines) == 1 and lines[0].startswith('auto attention backend: sdpa (flash cannot serve this call:')


def test_bad_calls():
    with pytest.raises(ValueError, match='must divide'): attention(*qkv(kv_heads=3))
    with pytest.raises(ValueError, match='as many keys as queries'): attention(*qkv(m=6), causal=True)


def test_importable_without_flash_attn():
    "The module never imports flash-attn at import time."
    src = inspect.getsource(mixers)
    assert 'import flash_attn' not in src.split('def _flash_func')[0]
    assert isinstance(flash_attn_available(), bool)
