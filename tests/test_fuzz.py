"""Spec fuzzer: one random mutation of a small preset's resolved spec must either build and run forward, or raise
`SpecError` naming a path. Anything else is collected and reported.

CI (`CI` set): 1,000 derandomised mutants in all (2,000 did not finish in 280 s here). Longer random run:
`MODELPLAY_FUZZ_EXAMPLES=20000 pytest -q tests/test_fuzz.py` (examples over all mutation kinds)."""
import copy, math, os, resource, signal, traceback
import pytest, torch

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import given, settings, strategies as st, HealthCheck

import modelplay as mp
from modelplay.spec import SpecError
from modelplay.zoo import spec_input

MAX_PARAMS, MAX_CPU_PARAMS, TIMEOUT_S, HUGE = 5_000_000, 2_000_000, 5, 10**9
GARBAGE_KEY, UNKNOWN = 'zz_not_a_key', 'no_such_component'
NESTED = {'a': [None, {}]}

def _n_params(model): return sum(p.numel() for p in model.parameters())

def _small_presets():
    out = {}
    for name in mp.list_presets():
        spec = mp.load_spec(name)
        try: n = _n_params(mp.build(copy.deepcopy(spec), device='meta'))
        except Exception: continue
        if n <= MAX_PARAMS: out[name] = spec
    return out

PRESETS = _small_presets()
NAMES = sorted(PRESETS)

# -- locations in a spec tree --------------------------------------------------------------------------------------
def _walk(obj, path=()):
    "Yield `(path, value)` for every node under `obj` (not `obj` itself)."
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield path + (k,), v
        yield from _walk(v, path + (k,))

def _get(spec, path):
    for k in path: spec = spec[k]
    return spec

def _is_int(v): return isinstance(v, int) and not isinstance(v, bool)

def _candidates(spec, kind):
    "Paths (with a choice list) a mutation of `kind` can act on."
    nodes = list(_walk(spec))
    dict_keys = [p for p, _ in nodes if isinstance(p[-1], str)]
    if kind in ('delete', 'rename'): return dict_keys
    if kind == 'wrong_type':
        return [p for p, v in nodes if isinstance(v, (str, dict, list)) or (_is_num(v))]
    if kind == 'unknown_component':
        return [p for p, v in nodes if p[-1] in ('type', 'block') and isinstance(v, str)]
    if kind == 'absurd_size': return [p for p, v in nodes if _is_int(v)]
    if kind == 'nan_inf': return [p for p, v in nodes if isinstance(v, float)]
    if kind == 'list_length':
        return [p for p, v in nodes if isinstance(p[-1], str) and p[-1] in ('stages', 'layers', 'shape')
                and isinstance(v, list) and v]
    if kind == 'empty_stages': return [p for p, v in nodes if p[-1] == 'stages' and isinstance(v, list)]
    if kind == 'nested_garbage': return [p for p, _ in nodes]
    raise ValueError(kind)

def _is_num(v): return isinstance(v, (int, float)) and not isinstance(v, bool)

def _wrong_type(v):
    if isinstance(v, str): return 12345
    if _is_num(v): return 'not_a_number'
    if isinstance(v, list): return {'x': 1}
    if isinstance(v, dict): return [1, 2]
    return 'garbage'

KINDS = ['delete', 'rename', 'wrong_type', 'unknown_component', 'absurd_size', 'nan_inf', 'list_length',
         'empty_stages', 'nested_garbage']

def mutate(spec, kind, data):
    "One mutation of `kind` on a deep copy of `spec` → `(mutant, description)`; None when `kind` has no target."
    cands = _candidates(spec, kind)
    if not cands: return None
    path = data.draw(st.sampled_from(cands), label='path')
    spec = copy.deepcopy(spec)
    parent, key = _get(spec, path[:-1]), path[-1]
    old = parent[key]
    if kind == 'delete': del parent[key]; new = '<deleted>'
    elif kind == 'rename': parent[GARBAGE_KEY] = parent.pop(key); new = f'<renamed to {GARBAGE_KEY}>'
    elif kind == 'wrong_type': new = _wrong_type(old)
    elif kind == 'unknown_component': new = UNKNOWN
    elif kind == 'absurd_size':
        new = data.draw(st.sampled_from([0, -3] if _huge_excluded(path) else [0, -3, HUGE]), label='size')
    elif kind == 'nan_inf': new = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label='float')
    elif kind == 'list_length':
        i = data.draw(st.integers(0, len(old) - 1), label='index')
        new = old[:i] + old[i + 1:] if data.draw(st.booleans(), label='drop') else old[:i + 1] + old[i:]
    elif kind == 'empty_stages': new = []
    elif kind == 'nested_garbage': new = copy.deepcopy(NESTED)
    if kind not in ('delete', 'rename'): parent[key] = new
    return spec, f"{kind} at {'.'.join(map(str, path))}: {_short(old)} -> {_short(new)}"

def _huge_excluded(path):
    """`HUGE` at these paths is not refused before allocation yet (known, see `test_huge_refused_before_allocation`):
    a stage `depth` builds 10**9 blocks one by one; an `input` size makes the forward input itself absurd."""
    return path[-1] == 'depth' or path[0] == 'input'

def _short(v, n=60):
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + '...'

# -- checking one mutant ------------------------------------------------------------------------------------------
class _Timeout(Exception): pass

def _alarm(*_): raise _Timeout(f'took more than {TIMEOUT_S}s (probably looping over or allocating an absurd size)')

def check_mutant(mutant):
    "None when the mutant builds and runs, or is refused with a pathed SpecError; else `(exc type, message, tb)`."
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        try:
            meta = mp.build(copy.deepcopy(mutant), device='meta')
            if _n_params(meta) <= MAX_CPU_PARAMS:
                model = mp.build(copy.deepcopy(mutant), device='cpu', seed=0)
                x, aux = spec_input(model.spec, 2)
                with torch.no_grad(): model(x, aux) if aux is not None else model(x)
        except SpecError as e:
            if any(p and p != '<spec>' for p in e.paths): return None
            return ('SpecError without a path', str(e)[:300], '')
        return None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt): raise
        tb = ''.join(traceback.format_exception(type(e), e, e.__traceback__)[-4:])
        return (type(e).__name__, str(e)[:300], tb[-800:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)

# -- the tests ----------------------------------------------------------------------------------------------------
# mutation kinds whose failures are known and not yet fixed in the package: kind -> reason (see the report)
KNOWN = {}

def _examples_per_kind():
    total = int(os.environ.get('MODELPLAY_FUZZ_EXAMPLES', 0)) or (1000 if os.environ.get('CI') else 300)
    return max(1, -(-total // len(KINDS)))

def _params(): return [pytest.param(k, marks=pytest.mark.xfail(reason=KNOWN[k], strict=False)) if k in KNOWN else k
                       for k in KINDS]

@pytest.fixture(scope='module', autouse=True)
def _limit_memory():
    "Cap the address space so an absurd-size mutant that really allocates fails with MemoryError, not the OOM killer."
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = 16 * 2**30
    if hard == resource.RLIM_INFINITY or hard > cap: resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

def test_presets_found():
    assert len(NAMES) >= 5, NAMES

@pytest.mark.parametrize('kind', _params())
def test_fuzz_specs(kind):
    failures, seen = [], [0]
    derandomize = bool(os.environ.get('CI')) or not os.environ.get('MODELPLAY_FUZZ_EXAMPLES')

    @settings(max_examples=_examples_per_kind(), derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        name = data.draw(st.sampled_from(NAMES), label='preset')
        m = mutate(PRESETS[name], kind, data)
        if m is None: return
        mutant, desc = m
        seen[0] += 1
        err = check_mutant(mutant)
        if err: failures.append((name, desc) + err)

    run()
    if failures:
        by_class = {}
        for f in failures: by_class.setdefault((f[2], f[3][:80]), []).append(f)
        lines = [f'{len(failures)} of {seen[0]} {kind} mutants crashed ({len(by_class)} classes):']
        for (etype, msg), fs in by_class.items():
            name, desc, _, full, tb = fs[0]
            lines.append(f'\n[{len(fs)}x] {etype}: {full}\n  e.g. {name}: {desc}\n{tb}')
        pytest.fail('\n'.join(lines), pytrace=False)

HUGE_CASES = [('mnist/vit_38k', ('stages', 0, 'depth')), ('mnist/convnext_18k', ('input', 'shape', 1)),
              ('text/gpt_char', ('input', 'seq_len'))]

@pytest.mark.xfail(reason='absurd sizes are not yet refused before allocation with a SpecError estimate '
                   '(depth=10**9 loops building blocks; a 10**9 input size builds and the forward input is absurd)',
                   strict=False)
@pytest.mark.parametrize('name,path', HUGE_CASES)
def test_huge_refused_before_allocation(name, path):
    spec = copy.deepcopy(PRESETS[name])
    _get(spec, path[:-1])[path[-1]] = HUGE
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        with pytest.raises(SpecError, match='GB'): mp.build(spec, device='meta')
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
