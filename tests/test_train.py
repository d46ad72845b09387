"""Training end to end: every MNIST-sized vision preset learns on real MNIST; fit under torchrun (DDP, two CPU ranks)
ends with identical weights on both ranks and one checkpoint; a SIGINT mid-epoch leaves history, model and checkpoint intact."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
import torch
import modelplay as mp

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get('MODELPLAY_DATA', ROOT.parent / 'shared' / 'datasets'))
need_mnist = pytest.mark.skipif(not (DATA / 'mnist' / 'train-images-idx3-ubyte.gz').exists(), reason='MNIST not found under MODELPLAY_DATA')
MNIST_PRESETS = [n for n in mp.list_presets() if n.startswith('mnist/')]

@pytest.fixture(scope='module')
def mnist():
    return mp.load_data('mnist')

LR = {'efficientnet_66k': 1e-2, 'vit': 1e-3}   # the deep, narrow EfficientNet needs a larger step to move in 20 steps; ViTs a smaller one

@need_mnist
@pytest.mark.parametrize('name', MNIST_PRESETS)
def test_mnist_preset_learns(name, mnist):
    "20 optimizer steps on real MNIST lower the loss on a fixed batch of 512 training images."
    data = mp.mnist_multitask(mnist) if name.startswith('mnist/mh_') else mnist
    model = mp.build(name, seed=0)
    x, y = next(iter(data.loader('train', batch_size=512, shuffle=False)))[:2]
    def loss():   # training mode (batch statistics: 20 steps are too few for BatchNorm's running averages), same dropout masks
        torch.manual_seed(0); model.train()
        return mp.make_loss(model.spec)(model(x), y)[0].item()
    with torch.no_grad(): before = loss()
    lr = next((v for k, v in LR.items() if k in name), 2e-3)
    h = mp.fit(model, data, steps=20, batch_size=32, lr=lr, schedule='constant', progress=False, eval=False, seed=0)
    assert len(h.steps) == 20 and all(s['loss'] == s['loss'] for s in h.steps)
    with torch.no_grad(): after = loss()
    assert after < before, f"{name}: loss on a fixed batch went from {before:.4f} to {after:.4f}"

def _run(code, tmp_path, env=None, **kw):
    script = tmp_path / 'job.py'; script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)] if 'torchrun' not in kw else kw.pop('torchrun') + [str(script)],
                            cwd=tmp_path, env={**os.environ, 'PYTHONPATH': str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

SMALL = """
import json, os, sys, torch, modelplay as mp
spec = {'input': {'shape': [1, 8, 8]}, 'stem': 'pixels',
        'stages': [{'dim': 8, 'depth': 1, 'layer': {'block': 'conv', 'pool': 'max'}}], 'pool': 'mean',
        'heads': {'label': {'type': 'linear', 'classes': 4}}}
data = mp.synthetic('image', n=2048, shape=(1, 8, 8), classes=4, seed=0)
"""

def test_ddp_two_cpu_ranks(tmp_path):
    code = SMALL + """
model = mp.build(spec, seed=0)
h = mp.fit(model, data, steps=6, batch_size=64, progress=False, callbacks=[mp.Checkpoint('ckpt.safetensors')], seed=0)
rank = int(os.environ['RANK'])
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
json.dump({'rank': rank, 'weights': flat.tolist(), 'steps': len(h.steps), 'samples': h.samples}, open(f'rank{rank}.json', 'w'))
"""
    p = _run(code, tmp_path, torchrun=[sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29513'])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    r0, r1 = (json.load(open(tmp_path / f'rank{r}.json')) for r in (0, 1))
    assert r0['steps'] == r1['steps'] == 6
    assert r0['samples'] == 6 * 64 * 2                      # both ranks' samples counted
    assert torch.equal(torch.tensor(r0['weights']), torch.tensor(r1['weights']))
    assert sorted(f.name for f in tmp_path.glob('ckpt*')) == ['ckpt.safetensors']   # one checkpoint, written by rank 0
    m = mp.load_checkpoint(tmp_path / 'ckpt.safetensors')
    assert torch.allclose(torch.cat([p.detach().flatten() for p in m.parameters()]), torch.tensor(r0['weights']))

def test_ddp_wall_time_budget_stops_every_rank_at_the_same_step(tmp_path):
    """Each rank reads its own clock: the ranks must still stop at the same step (or their collectives mismatch) and
    follow the same schedule (or their weights drift apart)."""
    code = SMALL + """
import time
model = mp.build(spec, seed=0)
rank = int(os.environ['RANK'])
if rank == 1: time.sleep(0.5)   # its clock starts later: its own elapsed time would give it another schedule
h = mp.fit(model, data, budget='2s', batch_size=64, progress=False, eval=False, seed=0)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
json.dump({'steps': len(h.steps), 'weights': flat.tolist(), 'reason': h.reason}, open(f'rank{rank}.json', 'w'))
"""
    p = _run(code, tmp_path, torchrun=[sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29514'])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    r0, r1 = (json.load(open(tmp_path / f'rank{r}.json')) for r in (0, 1))
    assert r0['steps'] == r1['steps'] > 0, (r0['steps'], r1['steps'])
    assert torch.equal(torch.tensor(r0['weights']), torch.tensor(r1['weights']))

def test_sigint_mid_epoch_keeps_history_model_and_checkpoint(tmp_path):
    code = SMALL + """
class Slow(mp.Callback):
    def on_step_end(self, run):
        if run.step == 3: print('READY', flush=True)
        import time; time.sleep(0.05)
model = mp.build(spec, seed=0)
h = mp.fit(model, data, epochs=50, batch_size=64, progress=False, seed=0,
           callbacks=[Slow(), mp.Checkpoint('ckpt.safetensors', every=5)])
ok = all(torch.isfinite(p).all() for p in model.parameters())
json.dump({'steps': len(h.steps), 'stopped': h.stopped_early, 'reason': h.reason, 'finite': bool(ok),
           'epochs': h.epochs, 'acc': mp.evaluate(model, data)['acc']}, open('out.json', 'w'))
"""
    p = _run(code, tmp_path)
    for line in p.stdout:
        if 'READY' in line: break
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    res = json.load(open(tmp_path / 'out.json'))
    assert res['stopped'] and 'interrupted' in res['reason'] and res['finite']
    assert 3 < res['steps'] < 50 * 32                       # stopped mid-run, at a step boundary
    assert res['epochs'][-1].get('partial') is True          # the partial epoch is reported
    m = mp.load_checkpoint(tmp_path / 'ckpt.safetensors')   # the checkpoint on disk is valid: the final state
    meta = mp.read_checkpoint_meta(tmp_path / 'ckpt.safetensors')
    assert meta['extra']['step'] == res['steps'] if 'extra' in meta else True
