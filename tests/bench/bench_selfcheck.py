"""Timing self-check of `bench`, on demand (not a unit test):

    python tests/bench/bench_selfcheck.py [--models mnist/cnn_421k mnist/vit_38k] [--times 3] [--isolate]

Benchmarks each model `--times` times in ONE `bench` call (default settings: the timing interleaved over the models in rounds) and prints, per model and metric, the medians
and the ratio of the largest to the smallest; the target is that the same model's medians lie within 10% of each other.
The exit status is 0 when every ratio is at most 1.10."""
import argparse, os, platform, sys
import torch
import modelplay as mp
from modelplay.bench import _cpu_name

KEYS = {'latency_ms': 'latency ms', 'infer_sps': 'infer samples/s', 'train_sps': 'train samples/s'}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', nargs='+', default=['mnist/cnn_421k', 'mnist/vit_38k'])
    ap.add_argument('--times', type=int, default=3); ap.add_argument('--isolate', action='store_true')
    a = ap.parse_args()
    names = [m for m in a.models for _ in range(a.times)]
    t = mp.bench(names, metrics=['latency', 'throughput', 'train'], isolate=a.isolate, progress=False)
    s = t.env['settings']
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}, "
          f"torch {torch.__version__}, threads {t.env.get('threads')}")
    print(f"bench settings: batch {s['batch_size']}, {s.get('rounds', 1)} rounds over all the models of {s['repeats']} repeats of >= {s['min_time']} s after {s['warmup']} warm-up calls, "
          f"isolate={a.isolate}, allocator: {s.get('allocator') or 'as the process left it'}")
    print(f"threads of other processes runnable during the run, on average: {t.env.get('others_running')}")
    worst = 1.0
    for m in a.models:
        rows = [r for r in t.rows if r['name'].split(' (')[0] == m]
        for k, label in KEYS.items():
            xs = [r[k] for r in rows]
            ratio = max(xs) / min(xs); worst = max(worst, ratio)
            spread = ' '.join(f"±{r[k + '_iqr'] / 2 / r[k]:.0%}" for r in rows)
            print(f"{m:<18} {label:<16} medians {' '.join(f'{x:,.3f}' if x < 100 else f'{x:,.0f}' for x in xs):<26} max/min {ratio:.3f}  (half-IQR {spread})")
    print(f"largest ratio {worst:.3f}: {'within' if worst <= 1.10 else 'OUTSIDE'} the 10% target")
    return 0 if worst <= 1.10 else 1

if __name__ == '__main__': sys.exit(main())
