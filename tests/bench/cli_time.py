"""Wall time of the fast CLI paths, interpreter start included, next to `python -c "import torch"` measured in the same run.

    python tests/bench/cli_time.py [--runs 5]

Each round runs, in fresh processes and in this order: `import torch`; `modelplay list`; `modelplay show imagenet/vit_b16`
answered from the CLI's measurement cache (warm); the same with `--no-cache` (cold: builds ViT-B/16 on the meta device and
runs the full summary, paying torch's one-time dispatch setup). The figures are medians (min..max) over the rounds. The cache
is a temporary folder (XDG_CACHE_HOME), filled by one untimed call first, so the user's cache is neither used nor touched.
Python's bytecode cache goes to a temporary folder too (PYTHONPYCACHEPREFIX), as on any installation after its first run:
with PYTHONDONTWRITEBYTECODE=1 in the environment (set on some machines) every process would compile modelplay's
sources again, about 0.1 s, which no ordinary installation pays.
Targets: `list` within 1.5 s, `show` within 2 s, warm and cold alike; the exit status is 0 when all are met."""
import argparse, os, platform, statistics, subprocess, sys, tempfile, time

CLI = [sys.executable, '-m', 'modelplay.cli']
CASES = {
    'python -c "import torch"': [sys.executable, '-c', 'import torch'],
    'modelplay list': CLI + ['list'],
    'modelplay show imagenet/vit_b16 (warm)': CLI + ['show', 'imagenet/vit_b16'],
    'modelplay show imagenet/vit_b16 --no-cache': CLI + ['show', 'imagenet/vit_b16', '--no-cache'],
}
TARGETS = {'modelplay list': 1.5, 'modelplay show imagenet/vit_b16 (warm)': 2.0, 'modelplay show imagenet/vit_b16 --no-cache': 2.0}

def wall(cmd, env) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t

def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--runs', type=int, default=5)
    runs = ap.parse_args().runs
    import torch
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, 'XDG_CACHE_HOME': cache, 'PYTHONPYCACHEPREFIX': os.path.join(cache, 'pycache')}
        env.pop('PYTHONDONTWRITEBYTECODE', None)
        for cmd in CASES.values(): wall(cmd, env)   # fills the caches (measurements, bytecode, file system); not timed
        times = {k: [] for k in CASES}
        for _ in range(runs):
            for k, cmd in CASES.items(): times[k].append(wall(cmd, env))
    load = ', '.join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, 'getloadavg') else '?'
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores (load average {load}), Python {platform.python_version()}, torch {torch.__version__}; "
          f"bytecode cached (PYTHONDONTWRITEBYTECODE was {os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')} here)")
    base = statistics.median(times['python -c "import torch"'])
    ok = True
    for k, xs in times.items():
        med = statistics.median(xs)
        target = TARGETS.get(k)
        verdict = f"  target {target:.1f} s: {'met' if med <= target else 'MISSED'}" if target else ''
        ok &= target is None or med <= target
        print(f"{k:<44} median {med:.2f} s  ({min(xs):.2f}..{max(xs):.2f}, {runs} runs)  import torch {med - base:+.2f} s{verdict}")
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
