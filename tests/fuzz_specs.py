"""Spec fuzzer: one random mutation of a preset's resolved spec must either build and run forward on its declared
input, or be refused with a `SpecError` that names the place (a spec path, or file:line:col for YAML text).
Anything else is a crash, collected with its traceback.

    python tests/fuzz_specs.py                              # 2,400 derandomised examples, as CI runs it (through tests/test_fuzz.py)
    python tests/fuzz_specs.py --examples 20000 --random    # a longer random run

Prints a table per mutation kind (tried / built and ran / refused with a place / crashed) and, with `--json PATH`,
writes the same counts and the crashes to PATH. Runs in its own process (test_fuzz.py caps its memory and time), so an
absurd allocation the package failed to refuse cannot take the test runner down with it."""
import argparse, copy, json, math, os, re, signal, sys, time, traceback
import torch, yaml
from hypothesis import given, settings, strategies as st, HealthCheck

import modelplay as mp
from modelplay.spec import SpecError
from modelplay.zoo import spec_input
from modelplay.models import tensor_bytes, free_memory

MAX_CPU_PARAMS, TIMEOUT_S, HUGE = 2_000_000, 20, 10**9
GARBAGE_KEY, UNKNOWN = 'zz_not_a_key', 'no_such_component'
NESTED = {'a': [None, {}]}
KINDS = ['delete', 'rename', 'wrong_type', 'unknown_component', 'absurd_size', 'nan_inf', 'list_length',
         'empty_stages', 'duplicate_key', 'nested_garbage']

def _n_params(model): return sum(p.numel() for p in model.parameters())

def all_presets():
    """Every preset, the fuzzer's starting points. A mutant is resolved and built on the meta device whatever its size; one of at
    most `MAX_CPU_PARAMS` parameters is then built on the CPU and run; a larger one must be refused when it would not fit."""
    return {name: mp.load_spec(name) for name in mp.list_presets()}

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
def _is_num(v): return isinstance(v, (int, float)) and not isinstance(v, bool)

def _candidates(spec, kind):
    "Paths a mutation of `kind` can act on."
    nodes = list(_walk(spec))
    if kind in ('delete', 'rename'): return [p for p, _ in nodes if isinstance(p[-1], str)]
    if kind == 'wrong_type': return [p for p, v in nodes if isinstance(v, (str, dict, list)) or _is_num(v)]
    if kind == 'unknown_component': return [p for p, v in nodes if p[-1] in ('type', 'block') and isinstance(v, str)]
    if kind == 'absurd_size': return [p for p, v in nodes if _is_int(v)]
    if kind == 'nan_inf': return [p for p, v in nodes if isinstance(v, float)]
    if kind == 'list_length':
        return [p for p, v in nodes if isinstance(p[-1], str) and p[-1] in ('stages', 'layers', 'shape')
                and isinstance(v, list) and v]
    if kind == 'empty_stages': return [p for p, v in nodes if p[-1] == 'stages' and isinstance(v, list)]
    if kind == 'nested_garbage': return [p for p, _ in nodes]
    raise ValueError(kind)

def _wrong_type(v):
    if isinstance(v, str): return 12345
    if _is_num(v): return 'not_a_number'
    if isinstance(v, list): return {'x': 1}
    if isinstance(v, dict): return [1, 2]
    return 'garbage'

_KEY_LINE = re.compile(r'^ *[A-Za-z_][\w.]*:')

def _duplicate_key(spec, data):
    "The spec as YAML text with one mapping-key line repeated right after itself (same mapping, same key)."
    lines = yaml.safe_dump(spec, sort_keys=False).splitlines()
    i = data.draw(st.sampled_from([i for i, l in enumerate(lines) if _KEY_LINE.match(l)]), label='line')
    lines.insert(i + 1, lines[i])
    return '\n'.join(lines) + '\n', f'duplicate_key at line {i + 2}: {lines[i].strip()!r}'

def mutate(spec, kind, data):
    "One mutation of `kind` of `spec` → `(mutant, description)` (a dict, or YAML text); None when `kind` has no target."
    if kind == 'duplicate_key': return _duplicate_key(spec, data)
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
    elif kind == 'absurd_size': new = data.draw(st.sampled_from([0, -3, HUGE]), label='size')
    elif kind == 'nan_inf': new = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label='float')
    elif kind == 'list_length':
        i = data.draw(st.integers(0, len(old) - 1), label='index')
        new = old[:i] + old[i + 1:] if data.draw(st.booleans(), label='drop') else old[:i + 1] + old[i:]
    elif kind == 'empty_stages': new = []
    elif kind == 'nested_garbage': new = copy.deepcopy(NESTED)
    if kind not in ('delete', 'rename'): parent[key] = new
    return spec, f"{kind} at {'.'.join(map(str, path))}: {_short(old)} -> {_short(new)}"

def _short(v, n=60):
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + '...'

# -- checking one mutant ------------------------------------------------------------------------------------------
class Timeout(Exception): pass

def _alarm(*_):
    signal.alarm(1)   # raised inside a gc callback the exception is swallowed: fire again until the check ends
    raise Timeout(f'took more than {TIMEOUT_S}s (probably looping over or allocating an absurd size)')

_PLACE = re.compile(r':\d+:\d+')   # file:line:col of a YAML error

def check_mutant(mutant):
    "`('ran'|'refused', None)`, or `('crashed', (exc type, message, traceback tail))`."
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        try:
            spec = mp.load_spec(copy.deepcopy(mutant))
            meta = mp.build(copy.deepcopy(spec), device='meta')
            # past the meta build, a CPU build either fits (and runs) or is refused by its size estimate
            model = mp.build(copy.deepcopy(spec), device='cpu', seed=0) if _n_params(meta) <= MAX_CPU_PARAMS else None
            if model is None and tensor_bytes(meta) > free_memory("cpu"):
                mp.build(copy.deepcopy(spec), device='cpu')
                return 'crashed', ('not refused', 'a spec larger than free memory was built on the CPU', '')
            if model is not None:
                x, aux = spec_input(model.spec, 2)
                with torch.no_grad(): model(x, aux) if aux is not None else model(x)
        except SpecError as e:
            if any(p and p != '<spec>' for p in e.paths) or _PLACE.search(str(e)): return 'refused', None
            return 'crashed', ('SpecError without a place', str(e)[:300], '')
        return 'ran', None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt): raise
        signal.alarm(0)
        tb = ''.join(traceback.format_exception(type(e), e, e.__traceback__)[-4:])
        return 'crashed', (type(e).__name__, str(e)[:300], tb[-800:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)

# -- a run ----------------------------------------------------------------------------------------------------------
def fuzz(kind, presets, examples, derandomize=True):
    "Run `examples` mutants of `kind`; returns counts and the crashes."
    names = sorted(presets)
    out = {'kind': kind, 'tried': 0, 'ran': 0, 'refused': 0, 'crashed': 0, 'crashes': [], 'slowest_s': 0.0}

    @settings(max_examples=examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        name = data.draw(st.sampled_from(names), label='preset')
        m = mutate(presets[name], kind, data)
        if m is None: return
        mutant, desc = m
        t0 = time.perf_counter()
        outcome, err = check_mutant(mutant)
        out['slowest_s'] = max(out['slowest_s'], time.perf_counter() - t0)
        out['tried'] += 1; out[outcome] += 1
        if err: out['crashes'].append({'preset': name, 'mutation': desc, 'type': err[0], 'message': err[1],
                                       'traceback': err[2]})
    one()
    return out

def table(results):
    rows = ['| mutation | tried | built and ran | refused with a place | crashed | slowest (s) |', '|---|---|---|---|---|---|']
    for r in results:
        rows.append(f"| {r['kind']} | {r['tried']} | {r['ran']} | {r['refused']} | {r['crashed']} | {r['slowest_s']:.2f} |")
    t = {k: sum(r[k] for r in results) for k in ('tried', 'ran', 'refused', 'crashed')}
    rows.append(f"| **all** | {t['tried']} | {t['ran']} | {t['refused']} | {t['crashed']} | |")
    return '\n'.join(rows)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--examples', type=int, default=2400, help='examples in all, spread evenly over the mutation kinds')
    ap.add_argument('--random', action='store_true', help='a new random seed (default: derandomised, as in CI)')
    ap.add_argument('--kinds', default=','.join(KINDS), help='comma-separated mutation kinds')
    ap.add_argument('--json', help='write the counts and crashes here')
    a = ap.parse_args(argv)
    kinds = a.kinds.split(',')
    torch.set_num_threads(1)   # tiny models: one thread is as fast, and steady when the machine is busy
    presets, t0 = all_presets(), time.perf_counter()
    per_kind = max(1, -(-a.examples // len(kinds)))
    results = [fuzz(k, presets, per_kind, derandomize=not a.random) for k in kinds]
    print(f'{len(presets)} presets (mutants of ≤ {MAX_CPU_PARAMS:,} parameters built and run), {per_kind} examples per kind, '
          f"{'random' if a.random else 'derandomised'}, {time.perf_counter() - t0:.0f} s, torch {torch.__version__}, "
          f'{torch.get_num_threads()} threads')
    print(table(results))
    for r in results:
        for c in r['crashes'][:3]: print(f"\n[{r['kind']}] {c['type']}: {c['message']}\n  e.g. {c['preset']}: {c['mutation']}\n{c['traceback']}")
    if a.json:
        with open(a.json, 'w') as f: json.dump({'presets': sorted(presets), 'results': results}, f, indent=1)
    return 1 if any(r['crashed'] for r in results) else 0

if __name__ == '__main__': sys.exit(main())
