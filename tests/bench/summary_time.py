"""How long `summary` takes for ViT-B/16 (224×224, FLOPs included), after `import modelplay`.

    python tests/bench/summary_time.py [--runs 7] [--device cpu|meta]

Two figures:
- warm: the median (and min..max) of `runs` calls in one process, after one call that is not timed;
- first call: the first `summary` in each of `runs` fresh interpreters (model already built, modelplay already
  imported), median. It includes costs torch pays once per process: the first tensor op on the meta device loads
  torch's meta kernels, and the first TorchDispatchMode (FlopCounterMode is one) or Python meta kernel imports
  torch._dynamo; `import torch._dynamo` alone is timed and printed beside it."""
import argparse, os, platform, statistics, subprocess, sys, time

FIRST = """
import time, torch, modelplay as mp
from modelplay.inspect import summary
m = mp.build('imagenet/vit_b16', device={device!r})
t = time.perf_counter(); s = summary(m); print(time.perf_counter() - t)
"""
DYNAMO = "import time, torch, modelplay; t = time.perf_counter(); import torch._dynamo; print(time.perf_counter() - t)"

def fresh(code):
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=7); ap.add_argument('--device', default='cpu', choices=['cpu', 'meta'])
    args = ap.parse_args()
    import torch, modelplay as mp
    from modelplay.inspect import summary
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    model = mp.build('imagenet/vit_b16', device=args.device)
    s = summary(model)
    print(f"model: imagenet/vit_b16 on {args.device}, {s.params:,} params, forward {s.flops_forward / 1e9:.2f} GFLOPs")
    warm = []
    for _ in range(args.runs):
        t = time.perf_counter(); summary(model); warm.append(time.perf_counter() - t)
    first = [fresh(FIRST.format(device=args.device)) for _ in range(args.runs)]
    dynamo = [fresh(DYNAMO) for _ in range(3)]
    med = statistics.median
    print(f"summary, warm          median {med(warm):.3f} s  ({min(warm):.3f}..{max(warm):.3f}, {args.runs} runs)  target: at most 1 s")
    print(f"summary, first call    median {med(first):.3f} s  ({min(first):.3f}..{max(first):.3f}, {args.runs} fresh processes)")
    print(f"  of which torch pays once per process: import torch._dynamo  median {med(dynamo):.3f} s")
    return 0 if med(warm) <= 1.0 else 1

if __name__ == '__main__': sys.exit(main())
