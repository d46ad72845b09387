"""Property tests of the spec language: random valid specs round-trip through YAML unchanged, and every
single-key corruption of a valid spec is a `SpecError` that names the place (never a KeyError/TypeError/...).

Specs are generated from the registries themselves (type hints → values), so every component registered
by the package is covered; a few typed toy parts make sure each kind has something to draw from."""
import copy, math
from typing import Annotated, Any, Literal, get_args, get_origin
import pytest
from hypothesis import given, strategies as st, settings

import modelplay as mp
from modelplay.registry import Range, Component, REGISTRIES
from modelplay.spec import fmt_path

# ---- typed toy parts, one per kind, registered for this module only --------------------------------
class PtNorm:
    def __init__(self, dim: int, eps: Annotated[float, Range(0, 1)] = 1e-5, affine: bool = True): pass
class PtAct:
    def __init__(self, inplace: bool = False): pass
class PtMixer:
    def __init__(self, dim: int, heads: Annotated[int, Range(1, 16)] = 4, mode: Literal['full', 'local'] = 'full',
                 window: int | None = None, causal: bool = False, dropout: Annotated[float, Range(0, 1)] = 0.0): pass
class PtMLP:
    def __init__(self, dim: int, ratio: Annotated[float, Range(0.5, 8)] = 4.0, act: Component['activations'] = 'pt_act',
                 sizes: list[int] = (16, 8), dropout: Annotated[float, Range(0, 1)] = 0.0): pass
class PtBlock:
    def __init__(self, dim: int, mixer: Component['mixers'] = 'pt_mixer', mlp: Component['mlps'] = 'pt_mlp',
                 norm: Component['norms'] = 'pt_norm', drop_path: Annotated[float, Range(0, 1)] = 0.0, layer_idx: int = 0): pass
class PtStem:
    def __init__(self, dim: int, patch: Annotated[int, Range(1, 8)] = 4, norm: Component['norms'] | None = None, in_chans: int = 3): pass
class PtDown:
    def __init__(self, dim: int, in_dim: int, kernel: Annotated[int, Range(1, 4)] = 2): pass
class PtPool:
    def __init__(self, dim: int, kind: Literal['mean', 'max'] = 'mean'): pass
class PtHead:
    def __init__(self, dim: int, classes: Annotated[int, Range(1, 1000)] = 10, bias: bool = True, label: str = 'y'): pass
class PtLoss:
    def __init__(self, label_smoothing: Annotated[float, Range(0, 1)] = 0.0): pass

TOYS = [('norms', 'pt_norm', PtNorm), ('activations', 'pt_act', PtAct), ('mixers', 'pt_mixer', PtMixer),
        ('mlps', 'pt_mlp', PtMLP), ('blocks', 'pt_block', PtBlock), ('stems', 'pt_stem', PtStem),
        ('downsamples', 'pt_down', PtDown), ('pools', 'pt_pool', PtPool), ('heads', 'pt_head', PtHead),
        ('losses', 'pt_loss', PtLoss)]
_ADDED = []

def setup_module():
    for kind, name, cls in TOYS: REGISTRIES[kind].register(name, cls); _ADDED.append((kind, name))
    if 'cross_entropy' not in mp.LOSSES: mp.LOSSES.register('cross_entropy', PtLoss); _ADDED.append(('losses', 'cross_entropy'))

def teardown_module():
    for kind, name in _ADDED: REGISTRIES[kind].unregister(name)

# ---- values from type hints ------------------------------------------------------------------------
def value_for(f, depth):
    if f.component:
        tk = REGISTRIES[f.component].type_key
        one = component(f.component, depth + 1, type_key=tk)
        opts = [st.lists(one, min_size=1, max_size=2) if f.many else one] if depth < 3 else []
        if f.optional: opts.append(st.none())
        return st.one_of(*opts) if opts else None   # too deep and not optional: leave it to the default
    if f.choices is not None: return st.sampled_from(f.choices)
    t, b = f.annotation, f.bounds
    base = st.none() if f.optional else st.nothing()
    if t is bool: return st.booleans() | base
    if t is int:
        lo = int(b.lo) if b and b.lo is not None else -1000
        hi = int(b.hi) if b and b.hi is not None else lo + 1000
        return st.integers(lo, hi) | base
    if t is float:
        lo = b.lo if b and b.lo is not None else -1e6
        hi = b.hi if b and b.hi is not None else 1e6
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | base
    if t is str: return st.text(st.characters(codec='utf-8', exclude_categories=('Cs', 'Cc')), max_size=12) | base
    if get_origin(t) in (list, tuple) and get_args(t)[:1] == (int,): return st.lists(st.integers(1, 64), max_size=4) | base
    return None   # a hint we cannot draw for: leave it to the default

@st.composite
def component(draw, kind, depth=0, type_key='type'):
    reg = REGISTRIES[kind]
    name = draw(st.sampled_from(reg.names()))
    info = reg.describe(name)
    out = {type_key: name}
    for f in info.params:
        strat = value_for(f, depth)
        if f.required and strat is None: return name   # cannot satisfy it: skip the kind's part
        if strat is not None and (f.required or draw(st.booleans())): out[f.name] = draw(strat)
    return out if len(out) > 1 or draw(st.booleans()) else name

@st.composite
def model_spec(draw):
    spec = {'name': draw(st.text(alphabet='abcxyz_0123', max_size=8)), 'input': {'shape': draw(st.lists(st.integers(1, 64), min_size=1, max_size=3))},
            'dim': draw(st.integers(1, 512)), 'stem': draw(component('stems'))}
    stages = []
    for _ in range(draw(st.integers(0, 3))):
        stage = {}
        if draw(st.booleans()): stage['dim'] = draw(st.integers(1, 512))
        if draw(st.booleans()):
            stage['depth'] = draw(st.integers(0, 4)); stage['layer'] = draw(component('blocks', type_key='block'))
        else:
            stage['layers'] = draw(st.lists(component('blocks', type_key='block'), min_size=1, max_size=3))
        if draw(st.booleans()): stage['downsample'] = draw(component('downsamples'))
        stages.append(stage)
    spec['stages'] = stages
    if draw(st.booleans()): spec['final_norm'] = draw(component('norms'))
    spec['pool'] = draw(component('pools'))
    heads = draw(st.lists(st.sampled_from(['label', 'aux', 'size']), min_size=1, max_size=3, unique=True))
    spec['heads'] = {h: draw(component('heads')) for h in heads}
    if draw(st.booleans()): spec['dropout'] = draw(st.floats(0, 1))
    if draw(st.booleans()): spec['seed'] = draw(st.integers(0, 2**31))
    return spec

@settings(max_examples=150)
@given(model_spec())
def test_resolved_specs_round_trip_through_yaml(raw):
    r = mp.resolve(raw)
    assert mp.resolve(r) == r                       # resolving is idempotent
    assert mp.load_spec(mp.save_spec(r)) == r       # YAML text and back
    assert mp.load_spec(copy.deepcopy(r)) == r

# ---- corruptions ----------------------------------------------------------------------------------
def positions(node, path=()):
    "Every (path, key) under `node`: dict keys and list items."
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k
            yield from positions(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield path, i
            yield from positions(v, path + (i,))

def get(node, path):
    for p in path: node = node[p]
    return node

def wrong_value(key, value):
    "A value of the wrong kind for `value` (type names become unknown names)."
    if key in ('type', 'block'): return 'zzq_no_such_part'
    if isinstance(value, (bool, int, float)) or value is None: return 'zzq'
    if isinstance(value, str): return [['zzq']]
    return 12345   # dicts and lists

@settings(max_examples=300)
@given(model_spec(), st.data())
def test_single_corruptions_raise_spec_error_with_path(raw, data):
    r = mp.resolve(raw)
    pos = list(positions(r))
    parent, key = data.draw(st.sampled_from(pos))
    bad = copy.deepcopy(r)
    node = get(bad, parent)
    rename = isinstance(node, dict) and data.draw(st.booleans())
    if rename:
        new = 'zzq_' + str(key)
        node = get(bad, parent)
        bad_node = {(new if k == key else k): v for k, v in node.items()}
        if parent: get(bad, parent[:-1])[parent[-1]] = bad_node
        else: bad = bad_node
        if key in ('name', 'description', 'seed', 'dropout') and not parent: pass
        if parent == ('heads',) or (not parent and key in ('name', 'seed', 'description')) or \
           (len(parent) == 2 and parent[0] == 'loss' and key == 'weight'):
            # renaming an optional key that has a default: still invalid (unknown key), checked below
            pass
    else:
        node[key] = wrong_value(key, node[key])
    try:
        mp.resolve(bad)
    except mp.SpecError as e:
        msg = str(e)
        where = fmt_path(parent + ((new,) if rename else (key,)))
        # the corrupted path itself; a renamed key that was required is also missing where it was, at its parent
        # a list item may be named in the list's message ("input.shape: item 0 must be ...")
        assert (where in msg or (rename and f"{fmt_path(parent)}: missing" in msg)
                or (isinstance(key, int) and f"{fmt_path(parent)}: item {key} " in msg)
                # a renamed head is itself fine; the loss written for the old name now names a head that is not there
                or (rename and parent == ('heads',) and f"no head named {key!r}; did you mean {new!r}" in msg)), f"{where} not in: {msg}"
        return
    # a corruption may only pass when it turns a value into another valid one: never for these
    pytest.fail(f"corruption at {fmt_path(parent + (key,))} ({'rename' if rename else 'wrong value'}) was accepted")
