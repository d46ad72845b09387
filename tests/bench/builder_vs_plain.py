"""Builder-made models against plain hand-written PyTorch with the same weights: forward + backward time, side by side.

    python tests/bench/builder_vs_plain.py [--reps 10] [--threads 2]

Each pair is checked to give the same output first (weights copied in parameter order); then forward+backward
steps alternate between the two models (warm-up, then `reps` timed steps each) and the medians are compared."""
import argparse, os, platform, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import modelplay as mp
from reference import resnet, vit, gpt

def copy_weights(src, dst):
    """Copy `src`'s parameters into `dst`: parameters are matched by shape, in registration order within each shape
    (the output check below proves the match)."""
    from collections import defaultdict
    groups = defaultdict(lambda: ([], []))
    key = lambda p: tuple(d for d in p.shape if d != 1)   # (1, T, C) position tables match (T, C) ones
    for p in dict.fromkeys(src.parameters()): groups[key(p)][0].append(p)
    for p in dict.fromkeys(dst.parameters()): groups[key(p)][1].append(p)
    with torch.no_grad():
        for shape, (a, b) in groups.items():
            assert len(a) == len(b), f"{len(a)} vs {len(b)} parameters of shape {shape}"
            for x, y in zip(a, b): y.copy_(x.view_as(y))

def step_time(model, x, loss_fn):
    t = time.perf_counter()
    loss_fn(model(x)).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t

CASES = {
    'vit_s16': (lambda: mp.build('imagenet/vit_b16', ['dim=384', 'stages.0.layer.mixer.heads=6']),
                lambda: vit.vit(dim=384, heads=6), lambda: torch.randn(4, 3, 224, 224)),
    'resnet18': (lambda: mp.build('imagenet/resnet18'), lambda: resnet.resnet18(), lambda: torch.randn(8, 3, 224, 224)),
    'gpt2_small_width': (lambda: mp.build('lm/gpt2', ['stages.0.depth=4', 'input.seq_len=256']),
                         lambda: gpt.gpt2(depth=4, n_positions=256), lambda: torch.randint(0, 50257, (2, 256))),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--reps', type=int, default=10); ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--only', nargs='*')
    args = ap.parse_args()
    torch.set_num_threads(args.threads); torch.manual_seed(0)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU, fp32, train mode, {args.reps} timed steps after 2 warm-up")
    print(f"{'model':<18} {'builder ms':>12} {'plain ms':>12} {'builder/plain':>14}  max |Δ output|")
    for name, (mk_ours, mk_ref, mk_x) in CASES.items():
        if args.only and name not in args.only: continue
        ours, ref, x = mk_ours(), mk_ref(), mk_x()
        copy_weights(ref, ours)
        ours.eval(); ref.eval()
        with torch.no_grad(): diff = (ours(x).float() - ref(x).float()).abs().max().item()
        ours.train(); ref.train()
        loss = lambda out: out.float().square().mean()
        for _ in range(2): step_time(ours, x, loss); step_time(ref, x, loss)
        t_ours, t_ref = [], []
        for i in range(args.reps):   # alternate which goes first, so allocator and cache effects fall on both
            if i % 2: t_ref.append(step_time(ref, x, loss)); t_ours.append(step_time(ours, x, loss))
            else: t_ours.append(step_time(ours, x, loss)); t_ref.append(step_time(ref, x, loss))
        mo, mr = statistics.median(t_ours) * 1e3, statistics.median(t_ref) * 1e3
        print(f"{name:<18} {mo:>9.1f} ±{statistics.pstdev(t_ours)*1e3:>4.0f} {mr:>8.1f} ±{statistics.pstdev(t_ref)*1e3:>4.0f} {mo/mr:>13.3f}  {diff:.2e}")

if __name__ == '__main__': main()
