"""The `modelplay` command line: exit codes and output through a real interpreter (`python -m modelplay.cli`), the files a
training run leaves, bench tables and plots, Ctrl-C, and bad input answered with one message and status 2 (a traceback only
with --debug). Cheap variations call `main([...])` in-process. Real-data tests use MNIST from MODELPLAY_DATA."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
import yaml
import modelplay as mp
from modelplay.cli import main, RUN_FILES

DATA = Path(os.environ.get('MODELPLAY_DATA', '/nonexistent'))
needs_mnist = pytest.mark.skipif(not (DATA / 'mnist').is_dir(), reason=f"no mnist under MODELPLAY_DATA={DATA}")
TINY = ['input.shape=[1,8,8]', 'heads.label.classes=4']   # MNIST presets resized for the synthetic 8×8, 4-class set

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "The test's environment with its own measurement cache."
    return {**os.environ, 'XDG_CACHE_HOME': str(tmp_path_factory.mktemp('cache'))}

@pytest.fixture
def cached(env, monkeypatch):
    "In-process runs use the same cache folder as the subprocesses."
    monkeypatch.setenv('XDG_CACHE_HOME', env['XDG_CACHE_HOME'])

def cli(*args, env, cwd, timeout=120):
    return subprocess.run([sys.executable, '-m', 'modelplay.cli', *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)

def run(capsys, *args):
    "(exit status, stdout, stderr) of `main(args)` in this process."
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

def test_import_is_light():
    "`import modelplay.cli` adds no heavy module to what `import modelplay` loads."
    code = ("import sys; import modelplay; before = set(sys.modules); import modelplay.cli; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('torch', 'matplotlib', 'torchinfo', 'modelplay', 'numpy')))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "['modelplay.cli', 'modelplay.clitext']"      # its own two modules, nothing heavy

def test_list_map_and_kinds(env, tmp_path, capsys):
    r = cli('list', env=env, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, '')
    assert r.stdout.startswith('Components by kind')
    assert re.search(r'^  mixers +.*\bmha\b', r.stdout, re.M) and re.search(r'^  mnist +.*\bcnn_8k\b', r.stdout, re.M)
    code, out, _ = run(capsys, 'list', 'mixers')
    assert code == 0 and out.startswith('mixers: ') and re.search(r'^mha \(alias: attention\) — ', out, re.M)
    assert re.search(r'^    heads +int >= 1 += 8$', out, re.M)
    code, out, _ = run(capsys, 'list', 'block', 'sequential')          # singular kind, one component
    assert code == 0 and out.startswith('sequential (alias: pre_norm) — ') and re.search(r'^    mixer +component\[mixers\]', out, re.M)
    code, out, _ = run(capsys, 'list', 'registries')
    assert code == 0 and all(re.search(rf'^{k}: \d+ component', out, re.M) for k in ('mixers', 'norms', 'heads'))

def test_list_presets_measured_once(env, tmp_path, capsys, cached, monkeypatch):
    r = cli('list', 'presets', 'mnist/cnn_8k', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(l for l in r.stdout.splitlines() if l.startswith('mnist/cnn_8k'))
    assert row.split()[-3:-1] == ['7,851', '121k'] and row.split()[-1].endswith('configs/mnist/cnn_8k.yaml')
    monkeypatch.chdir(tmp_path)                                            # the file column is relative to the working folder
    assert (Path(env['XDG_CACHE_HOME']) / 'modelplay' / 'cli' / 'presets.json').is_file()
    code, out, _ = run(capsys, 'list', 'presets', 'mnist/cnn_8k')         # from the cache: the same table
    assert (code, out) == (0, r.stdout)

def test_show(env, tmp_path, capsys, cached):
    r = cli('show', 'mnist/vit_38k', 'stages.0.depth=2', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    n = sum(p.numel() for p in mp.build('mnist/vit_38k', ['stages.0.depth=2'], device='meta').parameters())
    assert f"Parameters: {n:,} " in r.stdout and 'Layer (type (var_name))' in r.stdout
    assert re.search(r'FLOPs for input \(1, 1, 28, 28\).*forward [\d.]+ M', r.stdout)
    code, out, _ = run(capsys, 'summary', 'mnist/vit_38k', 'stages.0.depth=2')   # the alias, answered from the cache
    assert (code, out) == (0, r.stdout)

def test_spec_round_trip(env, tmp_path, capsys):
    r = cli('spec', 'mnist/cnn_8k', 'stages.0.dim=4', 'neck.layer.dropout=0.5', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    want = mp.load_spec('mnist/cnn_8k', ['stages.0.dim=4', 'neck.layer.dropout=0.5'])
    assert yaml.safe_load(r.stdout) == want
    code, out, err = run(capsys, 'spec', 'mnist/cnn_8k', 'stages.0.dim=4', '--out', tmp_path / 'my.yaml')
    assert (code, out) == (0, '') and mp.load_spec(str(tmp_path / 'my.yaml'))['stages'][0]['dim'] == 4

@needs_mnist
def test_train_writes_the_run(env, tmp_path):
    r = cli('train', 'mnist/cnn_8k', 'stages.0.dim=4', '--steps', 3, '--batch-size', 64, '--seed', 1, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    head, saved = r.stdout.splitlines()[:2]
    assert re.match(r'cnn_8k: 3 steps in [\d.]+ s \([\d,]+ samples/s\); train_loss [\d.]+, test_loss [\d.]+, test_acc [\d.]+$', head), head
    (out,) = (tmp_path / 'runs').glob('cnn_8k-*')                       # the default run folder
    assert saved == f"saved {Path('runs') / out.name}/: {' '.join(RUN_FILES)}"
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    model = mp.load_checkpoint(out / 'model.safetensors')
    assert model.spec['stages'][0]['dim'] == 4 and model.spec == mp.load_spec(str(out / 'spec.yaml'))
    meta = mp.read_checkpoint_meta(out / 'model.safetensors')['extra']
    assert (meta['step'], meta['data'], meta['reason']) == (3, 'mnist', 'done')
    hist = json.loads((out / 'history.json').read_text())
    assert [s['step'] for s in hist['steps']] == [1, 2, 3] and hist['stopped_early'] is False
    assert (out / 'history.csv').read_text().splitlines()[0].split(',') == list(hist['epochs'][0])
    assert len((out / 'steps.csv').read_text().splitlines()) == 4
    assert 'training cnn_8k (' in r.stderr and 'on mnist for 3 steps' in r.stderr

@needs_mnist
def test_ctrl_c_saves_and_exits_130(env, tmp_path):
    err = tmp_path / 'stderr.txt'
    with open(err, 'w') as f:
        p = subprocess.Popen([sys.executable, '-m', 'modelplay.cli', 'train', 'mnist/cnn_8k', '--steps', '100000', '--batch-size', '16', '--out', 'run'],
                             stdout=subprocess.PIPE, stderr=f, text=True, env=env, cwd=tmp_path)
        try:
            deadline = time.time() + 90
            while not re.search(r'\b[1-9]\d*/100000\b', err.read_text()):   # the bar has moved: steps are done
                assert p.poll() is None and time.time() < deadline, err.read_text()
                time.sleep(0.2)
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=60)
        finally:
            if p.poll() is None: p.kill()
    assert p.returncode == 130, err.read_text()
    assert 'stopped early: interrupted (Ctrl-C)' in out
    hist = json.loads((tmp_path / 'run' / 'history.json').read_text())
    assert hist['reason'].startswith('interrupted') and len(hist['steps']) >= 10
    assert mp.read_checkpoint_meta(tmp_path / 'run' / 'model.safetensors')['extra']['step'] == len(hist['steps'])

def test_bench_json_and_plot(env, tmp_path):
    r = cli('bench', 'mnist/sdn_8k', 'mnist/cnn_8k', *TINY, '--data', 'synthetic', '--steps', 2, '--format', 'json',
            '--metrics', 'params,accuracy', '--out', 'bench.json', '--plot', 'bench.png', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ''                                              # the table went to --out, progress to stderr
    table = json.loads((tmp_path / 'bench.json').read_text())
    assert [row['name'] for row in table['rows']] == [f"mnist/{n} {' '.join(TINY)}" for n in ('sdn_8k', 'cnn_8k')]
    assert all(row['steps'] == 2 and 0 <= row['acc'] <= 1 for row in table['rows'])
    assert table['rows'][0]['params'] == sum(p.numel() for p in mp.build('mnist/sdn_8k', TINY, device='meta').parameters())
    assert (tmp_path / 'bench.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

def test_bench_ctrl_c_writes_the_table_so_far(env, tmp_path):
    "Ctrl-C while the first model trains for its accuracy: the timing rows are written to --out, marked, and the exit status is 130."
    err = tmp_path / 'stderr.txt'
    with open(err, 'w') as f:
        p = subprocess.Popen([sys.executable, '-m', 'modelplay.cli', 'bench', 'mnist/sdn_8k', 'mnist/cnn_8k', *TINY, '--data', 'synthetic',
                              '--steps', '1000000', '--format', 'json', '--out', 'bench.json'],
                             stdout=subprocess.PIPE, stderr=f, text=True, env=env, cwd=tmp_path)
        try:
            deadline = time.time() + 120
            while 'timing round 3/3' not in err.read_text():
                assert p.poll() is None and time.time() < deadline, err.read_text()
                time.sleep(0.2)
            time.sleep(1.0)                                       # the first model is training now
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=60)
        finally:
            if p.poll() is None: p.kill()
    assert p.returncode == 130, err.read_text()
    assert 'modelplay bench: interrupted' in err.read_text()
    table = json.loads((tmp_path / 'bench.json').read_text())
    assert table['env']['interrupted'].startswith('while training mnist/sdn_8k')
    first, second = table['rows']
    assert first['note'].startswith('accuracy not measured: interrupted after') and 'acc' not in first
    assert second['note'] == 'accuracy not measured: interrupted' and second['latency_ms'] > 0

def test_bench_table_alone_on_stdout(capsys):
    code, out, err = run(capsys, 'bench', 'mnist/sdn_8k', 'mnist/cnn_8k', '--metrics', 'params,flops', '--format', 'csv')
    assert code == 0 and out.splitlines()[0] == 'name,family,params,flops'
    assert [l.split(',')[:3] for l in out.splitlines()[1:]] == [['mnist/sdn_8k', 'dense', '8470'], ['mnist/cnn_8k', 'cnn', '7851']]
    assert '[1/2] mnist/sdn_8k' in err and '[2/2] mnist/cnn_8k' in err

def test_demo_without_mnist_offline(env, tmp_path):
    "No MNIST under the data folder and no network: the data module's message, status 2."
    off = {**env, 'MODELPLAY_DATA': str(tmp_path / 'empty'), 'http_proxy': 'http://127.0.0.1:9', 'https_proxy': 'http://127.0.0.1:9',
           'HTTP_PROXY': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': '', 'NO_PROXY': ''}
    r = cli('demo', '--out', 'demo', env=off, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.splitlines()[1].startswith('modelplay demo: error: mnist: downloading failed'), r.stderr
    assert 'MODELPLAY_DATA' in r.stderr and 'Traceback' not in r.stderr and not (tmp_path / 'demo').exists()

def test_failed_train_leaves_no_folder(monkeypatch, tmp_path, capsys):
    for k, v in {'MODELPLAY_DATA': str(tmp_path / 'empty'), 'http_proxy': 'http://127.0.0.1:9', 'https_proxy': 'http://127.0.0.1:9',
                 'HTTP_PROXY': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': '', 'NO_PROXY': ''}.items():
        monkeypatch.setenv(k, v)
    code, out, err = run(capsys, 'train', 'mnist/cnn_8k', '--steps', 1, '--out', tmp_path / 'run')
    assert code == 2 and 'modelplay train: error: mnist: downloading failed' in err and not (tmp_path / 'run').exists()

@needs_mnist
def test_demo(monkeypatch, tmp_path, capsys):
    "The demo on real MNIST, in this process, with bench limited to size and accuracy (the full run measures speed too)."
    import sys
    bench_module = sys.modules['modelplay.bench']   # `modelplay.bench` is the function once the package re-exports it
    real, calls = bench_module.bench, []
    def lighter(models, **kw):
        calls.append((list(models), kw['data'].name, kw['budget']))
        return real(models, **kw, metrics=['params', 'flops', 'accuracy'], eval_batches=1)
    monkeypatch.setattr(bench_module, 'bench', lighter)
    code, out, err = run(capsys, 'demo', '--budget', '1s', '--out', tmp_path / 'demo')
    assert code == 0, err
    assert calls == [(['mnist/cnn_8k', 'mnist/vit_38k'], 'mnist', '1s')]
    assert re.search(r'^params +7,851 +37,770$', out, re.M)             # the side-by-side totals first
    assert re.search(r'^mnist/cnn_8k +cnn +7,851 +121k +\d+ ', out, re.M) and re.search(r'^mnist/vit_38k ', out, re.M)
    assert out.rstrip().endswith('bench.md bench.json bench.png')
    assert sorted(p.name for p in (tmp_path / 'demo').iterdir()) == ['bench.json', 'bench.md', 'bench.png']
    rows = json.loads((tmp_path / 'demo' / 'bench.json').read_text())['rows']
    assert [r['name'] for r in rows] == ['mnist/cnn_8k', 'mnist/vit_38k'] and all(0 <= r['acc'] <= 1 for r in rows)

def test_train_ddp_two_processes(env, tmp_path):
    r = cli('train', 'mnist/sdn_8k', *TINY, '--data', 'synthetic', '--steps', 2, '--batch-size', 32, '--nproc', 2, '--out', 'ddp',
            env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('sdn_8k: 2 steps in ') and r.stdout.count('saved ') == 1   # rank 0 alone reports and saves
    assert json.loads((tmp_path / 'ddp' / 'history.json').read_text())['samples'] == 2 * 2 * 32

def test_bad_input_is_one_message(env, tmp_path, capsys):
    r = cli('show', 'mnist/cnn8k', env=env, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, '')
    assert r.stderr.startswith("modelplay show: error: no preset or file named 'mnist/cnn8k'; did you mean 'mnist/cnn_8k'")
    assert 'Traceback' not in r.stderr and r.stderr.count('\n') == 1
    code, out, err = run(capsys, 'show', 'mnist/cnn8k', '--debug')
    assert (code, out) == (2, '') and err.startswith('Traceback') and 'SpecError' in err
    assert err.rstrip().splitlines()[-1].startswith("modelplay show: error: no preset or file named 'mnist/cnn8k'")

@pytest.mark.parametrize('args, message', [
    (['spec', 'mnist/cnn_8k', 'stages.0.depth'], "override 'stages.0.depth' must look like key.path=value"),
    (['spec', 'mnist/cnn_8k', 'dim=[1,'], "override 'dim=[1,': value is not valid YAML"),
    (['spec', 'mnist/cnn_8k', '.depth=2'], "empty key"),
    (['show', 'mnist/cnn_8k', 'stages.0.layer.kernel_sise=5'], "stages[0].layer.kernel_sise: unknown key for blocks component 'conv'; did you mean 'kernel_size'"),
    (['train', 'mnist/cnn_8k', '--data', 'mnsit'], "unknown data set 'mnsit'; did you mean 'mnist'"),
    (['train', 'imagenet/resnet18', '--steps', '1'], 'no data set to train on: pass --data NAME'),
    (['train', 'mnist/cnn_8k', '--device', 'tpu'], "device = 'tpu' is not valid"),
    (['bench', 'mnist/cnn_8k', '--metrics', 'params,sped'], "unknown metrics ['sped']"),
    (['bench', 'mnist/cnn_8k', '--metrics', ',,'], "metrics is empty"),
    (['bench', 'mnist/cnn_8k', '--data', 'mnsit', '--metrics', 'params'], "unknown data set 'mnsit'; did you mean 'mnist'"),
    (['bench', 'mnist/cnn_8k', '--budget', '1 fortnight'], "'1 fortnight' is not a wall time"),
    (['list', 'mixr'], "nothing to list called 'mixr'; did you mean 'mixers'"),
    (['list', 'presets', 'zzz/none'], "no preset matches 'zzz/none'"),
    (['bench', 'mnist/cnn_8k', 'mnist/cnn8k'], "did you mean 'mnist/cnn_8k'"),
    (['bench', 'mnist/cnn_8k', 'text/gpt_char', '--steps', '1'], 'sized for different data sets (mnist, tinyshakespeare)'),
    (['train', 'mnist/cnn_8k', '--steps', '0'], 'argument --steps: must be at least 1'),
    (['train', 'mnist/cnn_8k', '--budget', 'soon'], "'soon' is not a wall time"),
    (['train', 'mnist/cnn_8k', '--steps', '2', '--epochs', '1'], 'not allowed with argument'),
    (['frobnicate'], "invalid choice: 'frobnicate'"),
])
def test_bad_input_exits_2(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, '') and message in err and 'Traceback' not in err, err

@pytest.mark.parametrize('args, message', [
    (['spec', 'mnist/cnn_8k', 'stages.0.depth'], "override 'stages.0.depth' must look like key.path=value"),
    (['train', 'mnist/cnn_8k', '--data', 'mnsit'], "unknown data set 'mnsit'; did you mean 'mnist'"),
    (['bench', 'mnist/cnn_8k', '--data', 'mnsit', '--metrics', 'params'], "unknown data set 'mnsit'"),
    (['show', 'mnist/cnn_8k', 'dim=[1,'], "value is not valid YAML"),
])
def test_bad_input_through_the_script(env, tmp_path, args, message):
    "The same answers from a real interpreter: status 2, one line on stderr, nothing on stdout."
    r = cli(*args, env=env, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, '') and message in r.stderr and r.stderr.count('\n') == 1, r.stderr

@pytest.mark.parametrize('command', ['list', 'show', 'summary', 'spec', 'train', 'bench', 'demo', None])
def test_help(capsys, command):
    code, out, _ = run(capsys, *([command] if command else []), '--help')
    assert code == 0 and out.startswith(f"usage: modelplay {'show' if command == 'summary' else command or ''}".rstrip())
