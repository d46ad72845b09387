"""Checkpoints: fine-tuning round trips through `load_pretrained` (position and relative-bias tables resized, heads
dropped, everything else bit-identical), damaged files, a writer killed in the middle of a save, pickles refused, tied
weights, and the timm / Hugging Face mappings checked against the plain-PyTorch reference models."""
import copy, json, os, random, signal, struct, subprocess, sys, time
from pathlib import Path
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
import modelplay as mp
from modelplay.checkpoint import CheckpointError, save_checkpoint, load_checkpoint, load_weights, read_checkpoint_meta
from modelplay.pretrained import load_pretrained
from modelplay.registry import MIXERS

ROOT = Path(__file__).resolve().parent.parent
TINY = {'input': {'shape': [1, 28, 28]}, 'dim': 32, 'stem': {'type': 'patch', 'patch': 4, 'cls_token': True},
        'stages': [{'depth': 2, 'layer': {'block': 'sequential', 'mixer': {'type': 'mha', 'heads': 2}}}],
        'final_norm': 'layer', 'pool': 'cls', 'heads': {'label': {'type': 'linear', 'classes': 10}}}
BIGGER = ['input.shape=[1,32,32]', 'heads.label.classes=100']

pytestmark = pytest.mark.usefixtures('one_thread')   # tests/conftest.py

def with_mixer(**kw):
    spec = copy.deepcopy(TINY)
    spec['stages'][0]['layer']['mixer'].update(kw)
    return spec

def bicubic(grid, size):
    "Independent reference: (C, h, w) → (C, *size)."
    return F.interpolate(grid[None].float(), size=size, mode='bicubic', align_corners=False)[0]

def fine_tune_setup(spec, tmp_path):
    "Save `spec` at 28×28 / 10 classes, load it into the same family at 32×32 / 100 classes."
    path = save_checkpoint(mp.build(spec, seed=0), tmp_path / 'pretrained.safetensors', step=100)
    saved = load_file(path)
    model = mp.build(spec, BIGGER, seed=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    return model, load_pretrained(model, path), saved, fresh

def check_report(model, report, saved, fresh, adapted):
    own = model.state_dict()
    assert sorted(k for k, _ in report.adapted) == sorted(adapted)
    assert [k for k, _ in report.dropped] == ['heads.label.fc.weight', 'heads.label.fc.bias']
    assert report.ok and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert set(report.loaded) == set(own) - set(adapted) - {'heads.label.fc.weight', 'heads.label.fc.bias'}
    for k in report.loaded: assert torch.equal(own[k], saved[k]), k             # bit-identical to the file
    for k in ('heads.label.fc.weight', 'heads.label.fc.bias'): assert torch.equal(own[k], fresh[k])   # left at its init
    text = str(report)
    assert all(k in text for k in adapted) and 'heads.label.fc.weight' in text and 'dropped' in text
    assert '<table>' in report._repr_html_()

def check_pos_table(model, saved):
    old, new = saved['stem.pos.pos'], model.stem.pos.pos.detach()
    assert new.shape == (1, 1 + 8 * 8, 32)
    assert torch.equal(new[:, 0], old[:, 0])                                      # the cls position is kept
    want = bicubic(old[0, 1:].T.reshape(32, 7, 7), (8, 8)).reshape(32, 64).T
    torch.testing.assert_close(new[0, 1:], want, rtol=0, atol=1e-6)

def loss_goes_down(model, steps=6):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 32, 32, generator=gen), torch.randint(0, 100, (16,), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = model.loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < losses[0], losses

# --- (1), (2) fine-tuning round trips -------------------------------------------------------------------------------

def test_fine_tune_vit_resizes_positions_and_drops_the_head(tmp_path):
    model, report, saved, fresh = fine_tune_setup(TINY, tmp_path)
    check_report(model, report, saved, fresh, ['stem.pos.pos'])
    assert 'grid 7×7 → 8×8' in dict(report.adapted)['stem.pos.pos'] and '1 prefix' in dict(report.adapted)['stem.pos.pos']
    check_pos_table(model, saved)
    loss_goes_down(model)

def test_fine_tune_rel_bias_model_resizes_the_bias_tables(tmp_path):
    model, report, saved, fresh = fine_tune_setup(with_mixer(rel_bias=True), tmp_path)
    tables = [f'stages.0.blocks.{i}.mixer.relative_position_bias_table' for i in range(2)]
    check_report(model, report, saved, fresh, ['stem.pos.pos', *tables])
    check_pos_table(model, saved)
    for k in tables:
        new, old = model.state_dict()[k], saved[k]
        assert old.shape == (13 * 13, 2) and new.shape == (15 * 15, 2)
        want = bicubic(old.T.reshape(2, 13, 13), (15, 15)).reshape(2, -1).T
        torch.testing.assert_close(new, want, rtol=0, atol=1e-6)
        assert 'window 8×8' in dict(report.adapted)[k]
    loss_goes_down(model)

def test_handling_metadata_can_be_overridden_per_model(tmp_path):
    path = save_checkpoint(mp.build(TINY, seed=0), tmp_path / 'a.safetensors')
    model = mp.build(TINY, seed=1)
    model.pretrained_ckpt_handling_metadata = {'drop_params': ['heads.label.', 'stem.proj.']}
    r = load_pretrained(model, path)                      # same shapes: nothing is dropped by mismatch
    assert r.dropped == [] and len(r.loaded) == 32
    big = mp.build(TINY, BIGGER)
    big.pretrained_ckpt_handling_metadata = {'pos_tables': {}}          # no resizing for this one: the table does not fit
    with pytest.raises(CheckpointError, match='1 of another shape'): load_pretrained(big, path, strict=True)
    del big.pretrained_ckpt_handling_metadata
    assert load_pretrained(big, path, strict=True).ok

# --- (3) damaged files -----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def good(tmp_path_factory):
    path = save_checkpoint(mp.build(TINY, seed=0), tmp_path_factory.mktemp('good') / 'good.safetensors', step=1)
    return path.read_bytes()

READERS = {'read_checkpoint_meta': read_checkpoint_meta, 'load_checkpoint': load_checkpoint,
           'load_weights': lambda p: load_weights(mp.build(TINY), p), 'load_pretrained': lambda p: load_pretrained(mp.build(TINY), p)}

def header_len(data): return struct.unpack('<Q', data[:8])[0]

def fails(path, *words, readers=READERS):
    for name, read in readers.items():
        with pytest.raises(CheckpointError) as e: read(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: "), (name, msg)
        assert all(w in msg for w in words), (name, msg)

@pytest.mark.parametrize('where', ['empty', 'length field', 'inside header', 'start of data', 'inside data', 'last byte'])
def test_truncated_file_is_a_clear_error(good, tmp_path, where):
    n = header_len(good)
    cut = {'empty': 0, 'length field': 7, 'inside header': 8 + n // 2, 'start of data': 8 + n + 3,
           'inside data': (8 + n + len(good)) // 2, 'last byte': len(good) - 1}[where]
    path = tmp_path / 'cut.safetensors'
    path.write_bytes(good[:cut])
    fails(path, 'truncated')

def test_tampered_header_is_a_clear_error(good, tmp_path):
    n, path = header_len(good), tmp_path / 'bad.safetensors'
    path.write_bytes(good[:8] + b'[' + good[9:])                                    # JSON broken
    fails(path, 'damaged header', 'not valid JSON')
    for wrong in (len(good), 2 ** 63, n + 100, n - 3):                              # length field changed
        path.write_bytes(struct.pack('<Q', wrong) + good[8:])
        fails(path, 'header')
    header = json.loads(good[8:8 + n])
    header['stem.cls']['dtype'] = 'F16'                                             # byte range no longer fits the dtype
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(raw)) + raw + good[8 + n:])
    fails(path, 'damaged header', "'stem.cls'")
    header = json.loads(good[8:8 + n]); header['__metadata__']['spec'] = '{"input": '
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(raw)) + raw + good[8 + n:])
    fails(path, 'damaged header', "'spec' is not valid JSON", readers={'load_checkpoint': load_checkpoint})

def test_spec_naming_a_component_that_is_gone(tmp_path):
    @MIXERS.register('ckpt_test_gone')
    class Gone(nn.Module):
        "A mixer that will be unregistered."
        def __init__(self, dim: int): super().__init__(); self.lin = nn.Linear(dim, dim)
        def forward(self, x): return self.lin(x)
    try: path = save_checkpoint(mp.build(TINY, ['stages.0.layer.mixer={type: ckpt_test_gone}']), tmp_path / 'gone.safetensors')
    finally: MIXERS.unregister('ckpt_test_gone')
    with pytest.raises(CheckpointError) as e: load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: the model spec stored in it does not build")
    assert "stages[0].layer.mixer.type: unknown mixers component 'ckpt_test_gone'" in msg

def test_missing_file_and_strict_mismatch(tmp_path):
    fails(tmp_path / 'nope.safetensors', 'no such file')
    path = save_checkpoint(mp.build(TINY, seed=0), tmp_path / 'a.safetensors')
    model = mp.build(TINY, ['heads.label.classes=5'], seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e: load_weights(model, path)
    assert str(e.value).startswith(f"{path}: does not fit") and 'heads.label.fc.weight' in str(e.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # nothing was loaded

# --- (4) a writer killed in the middle of a save ---------------------------------------------------------------------

WRITER = r'''
import sys, torch, modelplay as mp
from modelplay.checkpoint import save_checkpoint
torch.set_num_threads(1)
path, step = sys.argv[1], int(sys.argv[2])
model = mp.build({'input': {'shape': [3, 32, 32]}, 'dim': 192, 'stem': {'type': 'patch', 'patch': 4, 'cls_token': True},
                  'stages': [{'depth': 6, 'layer': {'block': 'sequential', 'mixer': {'type': 'mha', 'heads': 3}}}],
                  'final_norm': 'layer', 'pool': 'cls', 'heads': {'label': {'type': 'linear', 'classes': 10}}})
sys.stdin.readline()                                   # started ahead of time: wait for the previous writer to be killed
first = step
with torch.no_grad():
    while True:
        for p in model.parameters(): p.fill_(step)     # every tensor of a save holds its step
        save_checkpoint(model, path, step=step)
        if step == first: print('ready', flush=True)
        step += 1
'''

def test_killed_writer_leaves_the_previous_checkpoint_intact(tmp_path):
    path, rng, interrupted = tmp_path / 'run.safetensors', random.Random(0), 0
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    def writer(round):
        return subprocess.Popen([sys.executable, '-c', WRITER, str(path), str(round * 1_000_000)], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs = [writer(r) for r in range(4)]                     # they import torch while the earlier ones run
    try:
        for round in range(10):                               # at least 4 kills, and on until one has landed inside a save
            if round >= 4 and interrupted: break
            if round >= len(procs): procs.append(writer(round))
            proc = procs[round]
            proc.stdin.write(b'go\n'); proc.stdin.flush()
            line = proc.stdout.readline()
            assert line.strip() == b'ready', proc.stderr.read().decode()[-2000:]
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL); proc.wait()
            interrupted += bool(list(tmp_path.glob('.*.tmp')))
            assert [p.name for p in tmp_path.rglob('*.safetensors')] == ['run.safetensors']  # temp files never look like checkpoints
            step = read_checkpoint_meta(path)['extra']['step']
            assert step >= round * 1_000_000                  # a save of this round, complete
            model = load_checkpoint(path)
            assert all(torch.all(p == step) for p in model.parameters())    # every tensor from that one save
    finally:
        for proc in procs:
            if proc.poll() is None: proc.kill(); proc.wait()
    assert interrupted > 0, "no kill landed inside a save: the test did not test anything"
    save_checkpoint(mp.build(TINY), path)                     # the next save removes the dead writers' temporary folders
    assert [p.name for p in tmp_path.iterdir()] == ['run.safetensors']

# --- (5) pickles are refused -----------------------------------------------------------------------------------------

class Payload:
    "Unpickling this would run a shell command."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

class Custom:
    "An ordinary user class."

def test_pt_files_are_read_with_weights_only(tmp_path):
    marker = tmp_path / 'pwned'
    for name, obj in [('payload.pt', Payload(marker)), ('custom.pth', Custom())]:
        path = tmp_path / name
        torch.save({'stem.cls': torch.zeros(1, 1, 32), 'x': obj}, path)
        for read in (lambda: load_weights(mp.build(TINY), path), lambda: load_pretrained(mp.build(TINY), path)):
            with pytest.raises(CheckpointError) as e: read()
            assert str(e.value).startswith(f"{path}: refused") and 'weights_only' in str(e.value)
    assert not marker.exists()
    model = mp.build(TINY, seed=0)
    torch.save({'model': model.state_dict(), 'epoch': 3}, tmp_path / 'train.pt')
    other = mp.build(TINY, seed=1)
    r = load_weights(other, tmp_path / 'train.pt')
    assert r.ok and r.notes == ["took the state dict under 'model'"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    (tmp_path / 'cut.pt').write_bytes((tmp_path / 'train.pt').read_bytes()[:200])
    with pytest.raises(CheckpointError, match='not a readable torch file'): load_weights(other, tmp_path / 'cut.pt')

# --- tied weights ----------------------------------------------------------------------------------------------------

GPT = {'task': 'causal_lm', 'input': {'vocab': 50, 'seq_len': 16}, 'dim': 32, 'stem': {'type': 'token', 'pos': 'learned'},
       'stages': [{'depth': 2, 'layer': {'block': 'sequential', 'mixer': {'type': 'mha', 'heads': 4},
                                         'mlp': {'type': 'mlp', 'ratio': 4.0, 'act': 'gelu_tanh'}, 'norm': 'layer'}}],
       'final_norm': 'layer', 'pool': 'none', 'heads': {'logits': {'type': 'causal_lm', 'tie': True}}}

def test_tied_weights_are_stored_once_and_tied_again(tmp_path):
    model = mp.build(GPT, seed=0)
    path = save_checkpoint(model, tmp_path / 'gpt.safetensors', step=7)
    meta = read_checkpoint_meta(path)
    assert meta['tied'] == {'heads.logits.fc.weight': 'stem.embed.weight'} and 'heads.logits.fc.weight' not in meta['tensors']
    back = load_checkpoint(path)
    assert back.heads['logits'].fc.weight is back.stem.embed.weight
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad(): assert torch.equal(back(ids), model(ids))
    r = load_pretrained(mp.build(GPT, seed=1), {k: v for k, v in model.state_dict().items() if not k.startswith('heads.')}, strict=True)
    assert r.adapted == [('heads.logits.fc.weight', 'tied to stem.embed.weight')] and r.missing == []

# --- mappings against the reference implementations ------------------------------------------------------------------

def test_timm_vit_mapping_reproduces_the_reference(tmp_path):
    from reference.vit import vit
    torch.manual_seed(0)
    ref = vit(image_size=28, patch=4, dim=32, depth=2, heads=2, num_classes=10, in_chans=1).eval()
    ln = '{type: layer, eps: 1.0e-6}'
    model = mp.build(TINY, [f'stages.0.layer.norm={ln}', f'final_norm={ln}']).eval()
    torch.save(ref.state_dict(), tmp_path / 'timm.pth')
    r = load_pretrained(model, tmp_path / 'timm.pth', mapping='timm_vit', strict=True)
    assert r.ok and len(r.loaded) == 32
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad(): torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    big = mp.build(TINY, [f'stages.0.layer.norm={ln}', f'final_norm={ln}', *BIGGER])
    r = load_pretrained(big, tmp_path / 'timm.pth', mapping='timm_vit')
    assert [k for k, _ in r.adapted] == ['stem.pos.pos'] and len(r.dropped) == 2 and r.ok

def test_hf_gpt2_mapping_reproduces_the_reference():
    from reference.gpt import gpt2
    torch.manual_seed(0)
    ref = gpt2(vocab=50, n_positions=32, dim=32, depth=2, heads=4).eval()
    conv1d = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
    hf = {('' if k.startswith('lm_head') else 'transformer.') + k: v.t().contiguous() if k.endswith(conv1d) else v
          for k, v in ref.state_dict().items()}                              # the layout of Hugging Face's files
    hf.update({f'transformer.h.{i}.attn.bias': torch.ones(1, 1, 32, 32).tril() for i in range(2)})
    model = mp.build(GPT).eval()
    r = load_pretrained(model, hf, mapping='hf_gpt2', strict=True)
    assert [k for k, _ in r.adapted] == ['stem.pos.pos'] and '32 → 16 positions' in r.adapted[0][1]
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad(): torch.testing.assert_close(model(ids), ref(ids), rtol=1e-5, atol=1e-5)
