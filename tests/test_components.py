"""Every registered component, in every registry, builds with its default arguments and runs forward and backward
on a tiny input with the output shape it promises. Components registered later are covered automatically:
the parameters are read from the registries when the tests are collected."""
import math
import pytest
import torch
import modelplay as mp
from modelplay.registry import REGISTRIES
from modelplay.spec import SpecError

B, DIM = 2, 32   # 32: the largest default divisor among the parts (GroupNorm groups=32)
GRIDS = [(4, 4), (16,), ()]   # tried in order: a 2-D grid, a sequence, flat features

# registries whose entries are not modules run on a tiny input: where their tests are
ELSEWHERE = {'checkpoint_sources': 'tests/test_checkpoint.py: each mapping against a reference state dict of its library'}

def cases():
    "Every name in every registry (a registry added later included), but those tested elsewhere."
    for kind, reg in REGISTRIES.items():
        if kind in ELSEWHERE: continue
        for name in reg.names():
            yield pytest.param(kind, name, id=f"{kind}:{name}")

def test_every_registry_is_covered():
    "A new registry gets a recipe in test_component_forward_backward (or a line in ELSEWHERE), else this fails."
    assert set(REGISTRIES) - set(ELSEWHERE) <= set(RECIPES), f"no test recipe for {set(REGISTRIES) - set(ELSEWHERE) - set(RECIPES)}"

def run_model(name):
    "A model from the models registry, built by `mp.build` for an image input (else a token sequence): forward, backward."
    last = None
    for inp, x in (({'shape': [3, 16, 16]}, lambda: torch.randn(B, 3, 16, 16)), ({'vocab': 11, 'seq_len': 8}, lambda: torch.randint(0, 11, (B, 8)))):
        try: m = mp.build({'input': inp, 'model': {'type': name}}, seed=0)
        except SpecError as e: last = e; continue
        y = m(x())
        y = y if isinstance(y, torch.Tensor) else next(iter(y.values()))
        assert y.shape[0] == B and torch.isfinite(y).all()
        grad_check(y, m); return
    raise last

def make(kind, name, **context):
    "Build with the first grid the component accepts; SpecErrors about the grid move on to the next one."
    last = None
    grids = [context.pop('grid')] if 'grid' in context else GRIDS
    for grid in grids:
        try: return REGISTRIES[kind].create(name, grid=grid, **context), grid
        except SpecError as e: last = e
    raise last

def grad_check(out, module, x=None):
    out.float().square().mean().backward()
    if x is not None and x.is_floating_point(): assert x.grad is not None and torch.isfinite(x.grad).all()
    params = [p for p in module.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in params), "some parameters got no gradient"
    assert all(torch.isfinite(p.grad).all() for p in params)

RECIPES = ('activations', 'losses', 'stems', 'heads', 'downsamples', 'pools', 'models', 'norms', 'mlps', 'mixers', 'blocks')

@pytest.mark.parametrize('kind,name', list(cases()))
def test_component_forward_backward(kind, name):
    torch.manual_seed(0)
    assert kind in RECIPES, f"no test recipe for registry {kind!r}"
    if kind == 'models': return run_model(name)
    if kind == 'activations':
        m = REGISTRIES[kind].create(name); x = torch.randn(B, 5, DIM, requires_grad=True)
        y = m(x); assert y.shape == x.shape; y.sum().backward(); assert x.grad is not None; return
    if kind == 'losses':
        m = REGISTRIES[kind].create(name)
        logits = torch.randn(B, 6, 11, requires_grad=True)
        if name == 'causal_lm': target = torch.randint(0, 11, (B, 6)); out = m(logits, target)
        elif name == 'mse': logits = torch.randn(B, 1, requires_grad=True); out = m(logits, torch.randn(B))
        else: logits = torch.randn(B, 11, requires_grad=True); out = m(logits, torch.randint(0, 11, (B,)))
        assert out.dim() == 0 and torch.isfinite(out); out.backward(); assert logits.grad is not None; return
    if kind == 'stems':
        takes = {f.name for f in REGISTRIES[kind].describe(name).fields}
        if 'vocab' in takes: m, x = REGISTRIES[kind].create(name, dim=DIM, vocab=11, seq_len=8, grid=(8,)), torch.randint(0, 11, (B, 8))
        else: m, x = REGISTRIES[kind].create(name, dim=DIM, in_chans=3, grid=(16, 16)), torch.randn(B, 3, 16, 16, requires_grad=True)
        y = m(x)
        tokens = (B, m.prefix + math.prod(m.grid), m.out_dim) if m.prefix else (B, *m.grid, m.out_dim)
        assert y.shape == tokens, (y.shape, tokens)
        grad_check(y, m, x); return
    if kind == 'heads':
        m = REGISTRIES[kind].create(name, dim=DIM, vocab=11)
        y = m(torch.randn(B, DIM)); assert y.shape[0] == B and y.dim() == 2; grad_check(y, m); return
    if kind == 'downsamples':
        m, grid = make(kind, name, dim=DIM, in_dim=8)
        x = torch.randn(B, *grid, 8, requires_grad=True); y = m(x)
        out_grid = m.out_grid(grid) if hasattr(m, 'out_grid') else grid
        assert y.shape == (B, *out_grid, DIM); grad_check(y, m, x); return
    if kind == 'pools':
        for grid, prefix in [((4, 4), 0), ((16,), 1), ((16,), 0)]:
            try: m = REGISTRIES[kind].create(name, dim=DIM, grid=grid, prefix=prefix)
            except SpecError: continue
            x = torch.randn(B, prefix + 16, DIM) if prefix else torch.randn(B, *grid, DIM)
            x.requires_grad_(True); y = m(x)
            assert y.shape == ((B, m.out_dim) if name != 'none' else x.shape); y.sum().backward(); return
        pytest.fail(f"pool {name!r} accepts none of the test grids")
    # norms, mlps, mixers, blocks: (B, *grid, C) → same shape
    context = dict(dim=DIM)
    if kind == 'blocks': context.update(in_dim=DIM, stride=1, layer_idx=0, n_layers=1)
    m, grid = make(kind, name, **context)
    x = torch.randn(B, *grid, DIM, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    grad_check(y, m, x)

def test_every_registry_has_parts():
    for kind in ('activations', 'norms', 'mlps', 'mixers', 'blocks', 'downsamples', 'stems', 'pools', 'heads', 'losses'):
        assert len(REGISTRIES[kind]) > 0, kind

def test_every_component_is_typed():
    "Constructors are the schema: every spec-settable parameter has a type hint."
    from typing import Any
    for kind, reg in REGISTRIES.items():
        for name in reg.names():
            for f in reg.describe(name).params:
                assert f.annotation is not Any or f.component, f"{kind}:{name}.{f.name} has no type hint"

def test_a_registered_model_is_run():
    "The recipe for the models registry on a user's model (none is registered by default)."
    from torch import nn
    @mp.MODELS.register('tiny_test_net')
    class Tiny(nn.Module):
        def __init__(self, in_chans: int = 3, width: int = 4):
            super().__init__(); self.conv, self.head = nn.Conv2d(in_chans, width, 3), nn.Linear(width, 5)
        def forward(self, x): return self.head(self.conv(x).mean((2, 3)))
    try:
        assert 'models:tiny_test_net' in [p.id for p in cases()]
        run_model('tiny_test_net')
    finally: mp.MODELS.unregister('tiny_test_net')
