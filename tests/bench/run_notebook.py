"""Run a notebook top to bottom and save it with its outputs (nbdev-test runs the same cells but keeps nothing).

    MODELPLAY_BENCH_FULL=1 python tests/bench/run_notebook.py nbs/benchmarks/mnist_architectures.ipynb [--out copy.ipynb]

The cells run in the notebook's folder, as under nbdev-test; the run stops at the first failing cell and then writes
nothing. A finished notebook is written in place (or to --out) and cleaned like every notebook here (nbdev-clean:
no execution counts or run metadata), so only its outputs change."""
import argparse, os, sys, time
from pathlib import Path

def _last_redraw(text: str) -> str:
    "Each line as a terminal would leave it: what follows its last carriage return."
    return '\n'.join(line.rsplit('\r', 1)[-1] if line.rstrip('\r') else line for line in text.split('\n'))

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebook', type=Path)
    ap.add_argument('--out', type=Path, help='write the executed notebook here instead of over NOTEBOOK')
    ap.add_argument('--cell-timeout', type=int, default=None, help='seconds a cell may run (default: no limit)')
    args = ap.parse_args()
    from fastcore.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.clean import nbdev_clean
    src = args.notebook.resolve()
    dest = (args.out or args.notebook).resolve()
    nb = read_nb(src)
    code = [c for c in nb.cells if c.cell_type == 'code']
    start, done = time.perf_counter(), [0]
    def before(cell):
        if cell.cell_type == 'code':
            done[0] += 1
            first = next((l for l in cell.source.splitlines() if l.strip() and not l.startswith('#|')), '')
            print(f"[{time.perf_counter() - start:7.1f} s] cell {done[0]}/{len(code)}: {first[:70]}", flush=True)
        return False
    os.chdir(src.parent)
    shell = CaptureShell(src)
    try: shell.run_all(nb, exc_stop=True, preproc=before, cell_timeout=args.cell_timeout)
    except Exception as e:
        print(f"failed in cell {done[0]}: {type(e).__name__}: {e}\n{dest} was not written", file=sys.stderr)
        return 1
    finally: shell.close()
    for c in code:                           # a progress bar's redraws (carriage returns) kept as its last state
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream': o['text'] = _last_redraw(''.join(o['text']) if isinstance(o['text'], list) else o['text'])
    write_nb(nb, dest)
    nbdev_clean(fname=str(dest))
    print(f"ran {len(code)} cells in {time.perf_counter() - start:.0f} s; wrote {dest}")
    return 0

if __name__ == '__main__': sys.exit(main())
