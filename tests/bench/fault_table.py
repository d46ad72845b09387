"""The fault matrix as a table: runs `pytest tests/test_faults.py` and prints, per category, how many bad inputs and faults
were tried, how many got a clear answer, how many crashed or answered unclearly, and how many lost data.

    python tests/bench/fault_table.py [--no-fuzz] [extra pytest arguments, e.g. -k cli]

The spec fuzzer (tests/fuzz_specs.py, 2,400 derandomised mutants) adds a row unless `--no-fuzz` is given.

A test counts as one case unless it records `cases` (and `failed`) with `record_property`, as the test walking every widget
field does. A failure raising `DataLost` counts as data lost; any other failure, and a known one marked xfail, as an
unexplained crash; the lines under the table name them. The exit status is pytest's."""
import sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = {'yaml': 'YAML / spec files', 'data': 'data files', 'ckpt': 'checkpoints', 'cli': 'CLI', 'widget': 'widgets',
              'train': 'training runs', 'limits': 'limits'}
COLUMNS = ('cases', 'clear', 'crashes', 'lost')

class Tally:
    "A pytest plugin adding up the outcomes of the fault tests by category."
    def __init__(self):
        self.rows, self.notes = {k: dict.fromkeys(COLUMNS, 0) for k in CATEGORIES}, []

    def pytest_runtest_logreport(self, report):
        if report.when != 'call' and report.passed: return            # setup and teardown count only when they fail
        if report.when == 'teardown' and report.skipped: return
        name = report.nodeid.split('::')[-1]
        row = self.rows.get(name.removeprefix('test_').split('_')[0])
        if row is None: return
        props = dict(report.user_properties)
        n = props.get('cases', 1)
        if hasattr(report, 'wasxfail'):
            row['cases'] += n; row['crashes'] += n; self.notes.append(f"known, marked xfail: {name}: {report.wasxfail}")
        elif report.skipped:
            self.notes.append(f"skipped: {name}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr}")
        elif report.passed:
            row['cases'] += n; row['clear'] += n
        else:
            bad = props.get('failed', n) or n
            row['cases'] += n; row['clear'] += n - bad
            row['lost' if 'DataLost' in report.longreprtext else 'crashes'] += bad
            first = next((l for l in report.longreprtext.splitlines() if l.startswith('E ')), '').removeprefix('E').strip()
            self.notes.append(f"failed: {name}: {first[:200]}")

    def table(self) -> str:
        head = ['| category | cases tried | clear errors | unexplained crashes | data lost |', '|---|---:|---:|---:|---:|']
        rows = [f"| {CATEGORIES[k]} | " + ' | '.join(str(r[c]) for c in COLUMNS) + ' |' for k, r in self.rows.items()]
        total = {c: sum(r[c] for r in self.rows.values()) for c in COLUMNS}
        return '\n'.join(head + rows + ['| **total** | ' + ' | '.join(f"**{total[c]}**" for c in COLUMNS) + ' |'])

def fuzz_row(tally: Tally, examples: int = 2400):
    "The spec fuzzer's mutants as one more row: built and ran, or refused with a place, is a clear answer."
    import json, subprocess, tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'fuzz.json'
        subprocess.run([sys.executable, str(ROOT / 'tests' / 'fuzz_specs.py'), '--examples', str(examples), '--json', str(out)],
                       capture_output=True, text=True)
        if not out.exists(): tally.notes.append('the spec fuzzer did not write its report'); return
        results = json.loads(out.read_text())['results']
    CATEGORIES['fuzz'] = 'spec mutants (fuzzer)'
    tally.rows['fuzz'] = {'cases': sum(r['tried'] for r in results), 'clear': sum(r['ran'] + r['refused'] for r in results),
                          'crashes': sum(r['crashed'] for r in results), 'lost': 0}
    for r in results:
        for c in r['crashes'][:3]: tally.notes.append(f"fuzzer [{r['kind']}] {c['type']}: {c['message'][:200]}")

def main() -> int:
    tally, t0 = Tally(), time.perf_counter()
    args = [a for a in sys.argv[1:] if a != '--no-fuzz']
    code = pytest.main([str(ROOT / 'tests' / 'test_faults.py'), '-q', '-p', 'no:cacheprovider', *args], plugins=[tally])
    if '--no-fuzz' not in sys.argv: fuzz_row(tally)
    print(f"\n{tally.table()}\n")
    for note in tally.notes: print(f"- {note}")
    print(f"\npytest tests/test_faults.py: exit status {int(code)}, {time.perf_counter() - t0:.1f} s")
    return int(code)

if __name__ == '__main__': sys.exit(main())
