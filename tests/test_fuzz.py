"""The spec fuzzer (`tests/fuzz_specs.py`) in CI: at least 2,000 derandomised mutants, zero crashes.

The fuzzer runs in a child process whose address space and wall time are capped, so a mutant that the package failed
to refuse shows up here as a failing test with its description, never as a test runner that is killed or hangs.
A longer random run: `python tests/fuzz_specs.py --examples 20000 --random`."""
import copy, json, os, resource, signal, subprocess, sys
from pathlib import Path
import pytest

pytest.importorskip('hypothesis')
import modelplay as mp
from modelplay.spec import SpecError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import fuzz_specs as fz

MIN_MUTANTS, MEMORY_CAP, WALL_S = 2000, 16 * 2**30, 600

def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

@pytest.fixture(scope='module')
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp('fuzz') / 'report.json'
    cmd = [sys.executable, str(HERE / 'fuzz_specs.py'), '--examples', os.environ.get('MODELPLAY_FUZZ_EXAMPLES', '2400'),
           '--json', str(out)]
    try: p = subprocess.run(cmd, capture_output=True, text=True, timeout=WALL_S, preexec_fn=_cap_memory)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f'the fuzzer did not finish in {WALL_S} s:\n{(e.stdout or b"")[-3000:]}', pytrace=False)
    print(p.stdout[:3000])
    if not out.exists():
        pytest.fail(f'the fuzzer process died (exit {p.returncode}) before writing its report:\n'
                    f'{p.stdout[-3000:]}\n{p.stderr[-3000:]}', pytrace=False)
    return {r['kind']: r for r in json.loads(out.read_text())['results']}

def test_enough_mutants(report):
    assert sum(r['tried'] for r in report.values()) >= MIN_MUTANTS, {k: r['tried'] for k, r in report.items()}
    assert set(report) == set(fz.KINDS)

@pytest.mark.parametrize('kind', fz.KINDS)
def test_no_crashes(report, kind):
    r = report[kind]
    assert r['tried'] > 0 and r['ran'] + r['refused'] + r['crashed'] == r['tried']
    if r['crashed']:
        lines = [f"{r['crashed']} of {r['tried']} {kind} mutants crashed:"]
        for c in r['crashes'][:5]:
            lines.append(f"\n{c['type']}: {c['message']}\n  e.g. {c['preset']}: {c['mutation']}\n{c['traceback']}")
        pytest.fail('\n'.join(lines), pytrace=False)

HUGE_CASES = [('mnist/vit_38k', ('stages', 0, 'depth')), ('mnist/convnext_18k', ('input', 'shape', 1)),
              ('text/gpt_char', ('input', 'seq_len')), ('text/gpt_char', ('input', 'vocab'))]

@pytest.mark.parametrize('name,path', HUGE_CASES)
def test_huge_refused_before_allocation(name, path):
    "An absurd size is refused in well under a second, at its place or the part it blows up, with an estimate."
    spec = mp.load_spec(name)
    fz._get(spec, path[:-1])[path[-1]] = fz.HUGE
    old = signal.signal(signal.SIGALRM, fz._alarm)
    signal.alarm(5)
    try:
        with pytest.raises(SpecError) as e: mp.build(spec)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    msg = str(e.value)
    assert ('GB' in msg and 'free on' in msg) or 'layers in all' in msg, msg
    assert e.value.paths and e.value.paths[0], msg
