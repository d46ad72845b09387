"""Every preset in configs/: loads by name, builds (on the meta device above 1 B parameters), runs forward + backward
on a batch of 2 of its declared input (up to 50 M parameters) with the right output shapes, and its resolved spec,
saved and reloaded, builds a model with the same parameter count and the same outputs for the same seed."""
import re
from pathlib import Path
import pytest
import torch
import modelplay as mp
from modelplay.zoo import spec_input

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.relative_to(ROOT / 'configs').with_suffix('').as_posix() for p in (ROOT / 'configs').rglob('*.yaml'))

def n_params(m): return sum(p.numel() for p in m.parameters())

def expected_shapes(spec, batch):
    inp, out = spec['input'], {}
    for name, h in spec['heads'].items():
        if h['type'] == 'causal_lm': out[name] = (batch, inp['seq_len'], inp['vocab'])
        else: out[name] = (batch, h['classes'])
    return out

@pytest.mark.parametrize('name', PRESETS)
def test_preset(name, tmp_path):
    spec = mp.load_spec(name)
    meta = mp.build(spec, device='meta')
    n = n_params(meta)
    if n > 1_000_000_000: return                       # meta only: LLaMA-7B
    if n > 50_000_000:                                 # allocate, but no forward pass on this CPU
        assert n_params(mp.build(spec, seed=0)) == n; return
    model = mp.build(spec, seed=0)
    x, aux = spec_input(spec, batch=2)
    run = lambda m: m(x, aux) if aux is not None else m(x)
    # the resolved spec, saved and reloaded, builds the same model: same count, same outputs (before any step moves BN stats)
    again = mp.build(mp.save_spec(spec, tmp_path / 'spec.yaml'), seed=0)
    assert n_params(again) == n
    model.eval(); again.eval()
    with torch.no_grad(): a, b = run(model), run(again)
    for u, v in (zip(a.values(), b.values()) if isinstance(a, dict) else [(a, b)]): assert torch.equal(u, v)
    # forward + backward in training mode, output shapes as the spec promises
    model.train()
    y = run(model)
    want = expected_shapes(spec, 2)
    got = {k: tuple(v.shape) for k, v in y.items()} if isinstance(y, dict) else {next(iter(want)): tuple(y.shape)}
    assert got == want
    (sum(v.float().square().mean() for v in y.values()) if isinstance(y, dict) else y.float().square().mean()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

SIBLINGS = [('lm/gpt2', ['dim=1024', 'stages.0.depth=24', 'stages.0.layer.mixer.heads=16'], 354_823_168),   # GPT-2 medium
            ('lm/gpt2', ['dim=1280', 'stages.0.depth=36', 'stages.0.layer.mixer.heads=20'], 774_030_080),   # GPT-2 large
            ('lm/codegen_350m', [], 356_712_448), ('imagenet/resnet34', [], 21_797_672), ('imagenet/vit_ti16', [], 5_717_416),
            ('imagenet/efficientnet_b0', [], 5_288_548), ('imagenet/convnextv2_atto', [], 3_708_400),
            ('imagenet/convnextv2_base', [], 88_717_800),
            # the CIFAR ResNets of the common 32x32 layout (3x3 stride-1 stem, no max-pool), counts as that layout is usually quoted
            ('cifar10/resnet18', [], 11_173_962), ('cifar10/resnet34', [], 21_282_122), ('cifar10/resnet50', [], 23_520_842),
            ('cifar10/resnet101', [], 42_512_970)]

@pytest.mark.parametrize('name,overrides,count', SIBLINGS)
def test_official_sizes(name, overrides, count):
    assert n_params(mp.build(name, overrides, device='meta')) == count

def test_presets_table_lists_everything():
    t = mp.presets('mnist/*')
    assert len(t) == len([p for p in PRESETS if p.startswith('mnist/')])
    assert t['mnist/cnn_421k'].params == 421_834 and t['mnist/cnn_421k'].flops > 0
    assert 'mnist/vit_38k' in repr(t) and '<table>' in t._repr_html_()

def test_counting_flops_does_not_import_the_compiler():
    "The first summary in a new process stays fast: counting FLOPs must not pull in torch._dynamo (~0.8 s)."
    import subprocess, sys
    code = ("import sys, torch, modelplay as mp; a = mp.summary('mnist/vit_38k').flops_forward_backward; "
            "print('torch._dynamo' in sys.modules)\n"
            # afterwards the real compiler loads and works, and counting under it gives the same figures
            "import torch._dynamo; assert hasattr(torch._dynamo, 'optimize'), 'stand-in left behind'\n"
            "f = torch.compile(lambda x: torch.sin(x) + 1, backend='eager'); assert f(torch.zeros(2)).tolist() == [1.0, 1.0]\n"
            "assert mp.summary('mnist/vit_38k').flops_forward_backward == a\nprint('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['False', 'ok'], out.stdout[-2000:]

STATED = {}
for _p in sorted((Path(__file__).resolve().parents[1] / 'configs').glob('*/*.yaml')):
    _m = re.search(r'([\d,]{5,}) parameters', ' '.join(l for l in _p.read_text().splitlines() if l.startswith('#')))
    if _m: STATED[f"{_p.parent.name}/{_p.stem}"] = int(_m.group(1).replace(',', ''))

@pytest.mark.parametrize('name', sorted(STATED))
def test_stated_counts(name):
    "A preset whose header comment states its parameter count has exactly that many (the first count stated)."
    assert n_params(mp.build(name, device='meta')) == STATED[name]
