"Data sets on the real publisher files (from MODELPLAY_DATA, skipped when absent), downloads without a network, and loader properties."
import gzip, io, os, shutil, time, urllib.error
from pathlib import Path
import pytest, torch
from hypothesis import given, strategies as st
from modelplay.data import (REMOTES, DataError, TensorLoader, fetch_data, file_hashes, load_data, mnist_multitask,
                            text_batches, THICKNESS, SMOOTHNESS)

ROOT = Path(os.environ.get('MODELPLAY_DATA', '/nonexistent'))

def _have(key):
    return all((ROOT / key / r.file).is_file() for r in REMOTES[key])

needs = lambda key: pytest.mark.skipif(not _have(key), reason=f"no {key} files under MODELPLAY_DATA={ROOT}")

@pytest.fixture(scope='module')
def mnist(): return load_data('mnist', download=False)

def _offline(url, timeout): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

def _serve_from(folder):
    "An opener that answers each URL with the same-named file in `folder`, as a publisher's server would."
    def opener(url, timeout):
        resp = io.BytesIO((Path(folder) / url.rsplit('/', 1)[-1]).read_bytes())
        resp.headers = {'Content-Length': str(len(resp.getbuffer()))}
        return resp
    return opener

@pytest.mark.parametrize('key', ['mnist', 'fashion_mnist', 'tinyshakespeare'])
def test_real_files_match_published_checksums(key):
    if not _have(key): pytest.skip(f"no {key} files under {ROOT}")
    for r in REMOTES[key]:
        path = ROOT / key / r.file
        assert (path.stat().st_size, *file_hashes(path)) == (r.size, r.md5, r.sha256), path
    assert fetch_data(key, download=False, verify=True) == ROOT / key

@needs('mnist')
def test_mnist_loads_with_known_shapes_counts_and_stats(capsys):
    before = sorted(os.listdir(ROOT / 'mnist'))
    t0 = time.perf_counter()
    data = load_data('mnist', download=False)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean, std = data.mean, data.std
    stats_s = time.perf_counter() - t0
    with capsys.disabled(): print(f"\nMNIST from .gz: load {load_s:.2f} s, mean/std {stats_s:.2f} s")
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    assert data.train.x.dtype == torch.uint8 and data.train.y.dtype == torch.int64
    assert data.train.y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert data.test.y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (data.shape, data.task, data.classes, data.input_spec) == ((1, 28, 28), 'classify', [str(d) for d in range(10)], {'shape': [1, 28, 28]})
    assert mean[0] == pytest.approx(0.1307, abs=5e-5) and std[0] == pytest.approx(0.3081, abs=5e-5)
    assert sorted(os.listdir(ROOT / 'mnist')) == before   # reading writes nothing

@needs('fashion_mnist')
def test_fashion_mnist_loads():
    data = load_data('fashion-mnist', download=False)
    assert (data.train.x.shape, data.test.x.shape) == ((60000, 1, 28, 28), (10000, 1, 28, 28))
    assert data.train.y.bincount().tolist() == [6000] * 10 and data.test.y.bincount().tolist() == [1000] * 10
    assert data.classes[0] == 'T-shirt/top' and data.classes[9] == 'Ankle boot'
    assert data.mean[0] == pytest.approx(0.2860, abs=5e-5) and data.std[0] == pytest.approx(0.3530, abs=5e-5)

@needs('tinyshakespeare')
def test_tinyshakespeare_loads():
    data = load_data('tinyshakespeare', download=False)
    text = (ROOT / 'tinyshakespeare' / 'input.txt').read_text(encoding='utf-8')
    assert (data.task, data.vocab, len(data.train), len(data.test)) == ('causal_lm', 65, 1_003_854, 111_540)
    assert data.decode(data.train[:14]) == 'First Citizen:' and data.decode(data.test[-20:]) == text[-20:]
    assert data.itos == sorted(set(text)) and data.encode(text[:1000]).tolist() == data.train[:1000].tolist()
    x, y = next(iter(data.loader('train', batch_size=8, seq_len=64, seed=0)))
    assert x.shape == y.shape == (8, 64) and torch.equal(x[:, 1:], y[:, :-1])

@needs('mnist')
def test_mnist_loader_epoch(mnist):
    loader = mnist.loader('train', batch_size=1000, seed=0)
    assert len(loader) == 60
    ys, total, sq = [], 0.0, 0.0
    for x, y in loader:
        assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
        ys.append(y); total += x.sum(dtype=torch.float64).item(); sq += x.square().sum(dtype=torch.float64).item()
    n = 60000 * 784
    assert total / n == pytest.approx(0, abs=1e-4) and (sq / n) ** 0.5 == pytest.approx(1, abs=1e-4)
    assert sorted(torch.cat(ys).tolist()) == sorted(mnist.train.y.tolist())

@needs('mnist')
def test_mnist_multitask_labels(mnist):
    mt = mnist_multitask(mnist)
    y = mt.train.y
    assert torch.equal(y['digit'], mnist.train.y)
    assert torch.equal(y['thickness'], torch.tensor(THICKNESS)[y['digit']]) and torch.equal(y['smoothness'], torch.tensor(SMOOTHNESS)[y['digit']])
    assert mt.n_classes == {'digit': 10, 'thickness': 5, 'smoothness': 3} and mt.mean == mnist.mean

def test_offline_error_lists_files_and_checksums(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataError) as e: load_data('mnist', root=tmp_path, opener=_offline)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert 'URLError' in msg and f"Put these files in {tmp_path / 'mnist'}/" in msg
    for r in REMOTES['mnist']:
        assert r.file in msg and r.md5 in msg and r.sha256 in msg and f"{r.size:,} bytes" in msg and r.urls[0] in msg
    assert os.listdir(tmp_path / 'mnist') == []
    with pytest.raises(DataError, match=r"(?s)tinyshakespeare: 1 file\(s\) missing .*download=False.*input.txt  \(1,115,394 bytes, md5 6fb458f1"):
        load_data('tinyshakespeare', root=tmp_path, download=False)

@needs('mnist')
def test_download_verifies_and_then_loads(tmp_path, mnist):
    "A full download through an opener serving the publisher's bytes: each file is checked and lands whole."
    data = load_data('mnist', root=tmp_path, opener=_serve_from(ROOT / 'mnist'))
    assert sorted(os.listdir(tmp_path / 'mnist')) == sorted(r.file for r in REMOTES['mnist'])
    assert torch.equal(data.train.x, mnist.train.x) and torch.equal(data.test.y, mnist.test.y)

@needs('mnist')
def test_download_with_wrong_bytes_leaves_nothing(tmp_path):
    fake = tmp_path / 'server'; shutil.copytree(ROOT / 'mnist', fake)
    blob = bytearray((fake / 't10k-labels-idx1-ubyte.gz').read_bytes()); blob[100] ^= 1
    (fake / 't10k-labels-idx1-ubyte.gz').write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch: expected md5 ec29112dd5afa0611ce80d1b7f02629c"):
        load_data('mnist', root=tmp_path / 'data', opener=_serve_from(fake))
    assert 't10k-labels-idx1-ubyte.gz' not in os.listdir(tmp_path / 'data' / 'mnist')
    assert not [f for f in os.listdir(tmp_path / 'data' / 'mnist') if f.startswith('.')]   # no temporary file left

@needs('mnist')
def test_damaged_local_files_are_named(tmp_path):
    shutil.copytree(ROOT / 'mnist', tmp_path / 'mnist')
    img = tmp_path / 'mnist' / 't10k-images-idx3-ubyte.gz'
    img.write_bytes(img.read_bytes()[:-1000])
    with pytest.raises(DataError, match='t10k-images-idx3-ubyte.gz: the gzip data is truncated or corrupt'): load_data('mnist', root=tmp_path)
    with pytest.raises(DataError, match='t10k-images-idx3-ubyte.gz: checksum mismatch: expected md5 9fb629c4'): fetch_data('mnist', tmp_path, verify=True)
    img.write_bytes(gzip.compress(gzip.decompress((ROOT / 'mnist' / 't10k-images-idx3-ubyte.gz').read_bytes())[:-28 * 28], compresslevel=1))
    with pytest.raises(DataError, match=r'truncated: the header says 10000 x 28 x 28 items'): load_data('mnist', root=tmp_path)
    shutil.copy(ROOT / 'mnist' / 't10k-labels-idx1-ubyte.gz', img)
    with pytest.raises(DataError, match='wrong magic number 2049; expected 2051'): load_data('mnist', root=tmp_path)

@given(n=st.integers(1, 60), batch=st.integers(1, 9), world=st.integers(1, 4), shuffle=st.booleans(), drop_last=st.booleans())
def test_shards_are_disjoint_and_even(n, batch, world, shuffle, drop_last):
    x, ids = torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)
    shards = [TensorLoader(x, ids, batch, shuffle=shuffle, drop_last=drop_last, seed=7, rank=r, world_size=world) for r in range(world)]
    seen = [[y for _, y in s] for s in shards]
    assert len({len(s) for s in shards}) == 1 and all(len(b) == len(shards[0]) for b in seen)
    flat = [torch.cat(b).tolist() if b else [] for b in seen]
    every = sum(flat, [])
    assert len(every) == len(set(every))
    if not drop_last: assert len(every) == n // world * world

def test_text_batches_reach_the_end():
    ids = torch.arange(20)
    starts = torch.cat([x[:, 0] for x, _ in text_batches(ids, seq_len=5, batch_size=64, steps=10, seed=0)])
    assert starts.min() == 0 and starts.max() == 14   # every window start, the last one included
