"""How much `import modelplay` costs on top of `import torch`, measured side by side in fresh interpreters.

    python tests/bench/import_time.py [--runs 7]

Each run starts two fresh interpreters, alternating, one doing `import torch` and one `import torch, modelplay`;
the figures are medians (and min..max) of the wall time of the import statements alone."""
import argparse, os, platform, statistics, subprocess, sys

CODE = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"

def once(stmt):
    out = subprocess.run([sys.executable, '-c', CODE.format(stmt=stmt)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--runs', type=int, default=7)
    runs = ap.parse_args().runs
    once('import torch, modelplay')   # warm the file cache
    torch_t, both_t = [], []
    for _ in range(runs):
        torch_t.append(once('import torch')); both_t.append(once('import torch, modelplay'))
    import torch
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}")
    med = lambda xs: statistics.median(xs)
    print(f"import torch             median {med(torch_t):.3f} s  ({min(torch_t):.3f}..{max(torch_t):.3f}, {runs} runs)")
    print(f"import torch, modelplay  median {med(both_t):.3f} s  ({min(both_t):.3f}..{max(both_t):.3f}, {runs} runs)")
    extra = med(both_t) - med(torch_t)
    print(f"modelplay adds           {extra:+.3f} s  (target: at most 0.300 s)")
    return 0 if extra <= 0.3 else 1

if __name__ == '__main__': sys.exit(main())
