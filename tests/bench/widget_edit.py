"""Edit → refreshed stats latency of the builder panel: random edits replayed through the panel's own update path.

    python tests/bench/widget_edit.py [--edits 200] [--seed 0] [--presets mnist/vit_38k imagenet/resnet50 imagenet/vit_b16]

For each preset a `BuilderPanel` is made (which computes the stats once), then `--edits` random edits are applied by setting
a widget's value exactly as a browser would (an int, float, bool or choice field, a null toggle, or a component dropdown),
which runs the panel's observer synchronously: write the raw spec, resolve and build on the meta device, count FLOPs
(parts seen before come from the cache), place errors, redraw the stats and the YAML, rebuild the form where it changed.
Each edit is timed from the value assignment to its return. Half of the edits are undone right after (also timed), and so
is every edit that makes the model invalid or larger than 1.5 × ViT-B/16, so the walk stays around the preset's size.
ViT-B/16 runs twice: one layer spec for all 12 layers, and one per layer. Prints p50/p95/max per preset and overall."""
import argparse, copy, os, platform, random, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from modelplay.widgets import BuilderPanel, FieldRow, ComponentEditor
from modelplay.fields import _NONE

LIMIT = int(1.5 * 86_567_656)


def candidates(panel):
    "Every row an edit can change (not the name, the input preset or free-text YAML fields)."
    rows = []
    for path, row in panel._rows.items():
        if panel._rows.get(path) is not row or path[-1] in ('type', 'block'): continue
        if isinstance(row, ComponentEditor): rows.append(row)
        elif isinstance(row, FieldRow) and path not in (('name',), ('input',)) and row.kind in ('int', 'float', 'bool', 'choice'):
            rows.append(row)
    return rows


def random_edit(row, rng):
    "(widget, new value) for a plausible random edit of `row`."
    if isinstance(row, ComponentEditor):
        return row.dropdown, rng.choice([v for v in row.choices if v != row.dropdown.value] or [row.dropdown.value])
    if row.toggle is not None and (not row.toggle.value or rng.random() < 0.2): return row.toggle, not row.toggle.value
    v = row.input.value
    if row.kind == 'bool': return row.input, not v
    if row.kind == 'choice': return row.input, rng.choice([c for _, c in row.input.options])
    if row.kind == 'int': return row.input, max(0, rng.choice([v + 1, v - 1, v * 2, max(1, v // 2)]))
    return row.input, round(v * rng.choice([0.5, 2.0]) if v else rng.choice([0.1, 0.5, 1.0]), 6)


def timed(widget, value):
    t = time.perf_counter(); widget.value = value
    return time.perf_counter() - t


def run(preset, edits, seed, per_layer=False):
    panel = BuilderPanel(preset)
    if per_layer:
        for i in range(len(panel.spec.get('stages', []))): panel.set_per_layer(i)
    rng, times, compute, valid = random.Random(seed), [], [], []
    shown = lambda w: any(w is getattr(r, k, None) for r in panel._rows.values() for k in ('input', 'toggle', 'dropdown'))
    while len(times) < edits:
        row = rng.choice(candidates(panel))
        widget, value = random_edit(row, rng)
        old, before = widget.value, copy.deepcopy(panel.spec)
        if value == old: continue
        times.append(timed(widget, value))
        if not panel.errors: compute.append(panel.stats.seconds); valid.append(times[-1])
        bad = bool(panel.errors) or panel.stats.params > LIMIT
        if len(times) < edits and (bad or rng.random() < 0.5):
            if shown(widget):                                      # undo through the same widget, timed too
                times.append(timed(widget, old))
                if not panel.errors: valid.append(times[-1])
            elif bad: panel.load(before)                           # the form was rebuilt: reload the last spec (not timed)
    panel.close()
    return times[:edits], valid, compute


def pct(xs, q): return sorted(xs)[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--edits', type=int, default=200)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--presets', nargs='*', default=['mnist/vit_38k', 'cifar10/resnet18', 'imagenet/resnet50', 'imagenet/vit_b16'])
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if Path('/proc/cpuinfo').exists() else platform.processor()
    print(f"# {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {a.edits} random edits per case through BuilderPanel widgets (no kernel attached: no comm messages are sent)")
    print(f"{'case':<30} {'edits':>5} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'valid':>6} {'valid p50':>9} {'valid p95':>9} {'stats p50':>9}")
    every, every_valid = [], []
    cases = [(p, False) for p in a.presets] + ([('imagenet/vit_b16', True)] if 'imagenet/vit_b16' in a.presets else [])
    for preset, per_layer in cases:
        times, valid, compute = run(preset, a.edits, a.seed, per_layer)
        every += times; every_valid += valid
        name = preset + (' (per layer)' if per_layer else '')
        print(f"{name:<30} {len(times):>5} {1e3 * pct(times, .5):>7.1f} {1e3 * pct(times, .95):>7.1f} {1e3 * max(times):>7.1f} "
              f"{len(valid):>6} {1e3 * pct(valid, .5):>9.1f} {1e3 * pct(valid, .95):>9.1f} {1e3 * statistics.median(compute):>9.1f}", flush=True)
    print(f"{'all':<30} {len(every):>5} {1e3 * pct(every, .5):>7.1f} {1e3 * pct(every, .95):>7.1f} {1e3 * max(every):>7.1f} "
          f"{len(every_valid):>6} {1e3 * pct(every_valid, .5):>9.1f} {1e3 * pct(every_valid, .95):>9.1f}")
    print("# ms from setting the widget's value to the refreshed stats; 'valid': edits after which the spec builds (the others "
          "end at the error display); 'stats': spec_stats alone (resolve, meta build, FLOPs)")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == '__main__':
    main()
