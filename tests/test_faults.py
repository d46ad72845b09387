"""Fault matrix: every bad input gets a clear answer, every fault loses nothing.

Seven categories, one test-name prefix each: `test_yaml_` (spec files through `load_spec`, `modelplay show` and
`modelplay train`), `test_data_` (the publishers' file formats, written small into tmp_path, and downloads cut short),
`test_ckpt_` (damaged, tampered, mismatched and malicious checkpoints; failed saves), `test_cli_` (bad arguments to every
subcommand: status 2, one error line, a traceback only with --debug), `test_widget_` (every editable field of the builder
panel refuses invalid values next to the field), `test_train_` (training runs that go wrong — a loss that blows up, NaN in
the data, out of memory, Ctrl-C, a bad recipe, data that does not fit the model: stopped or refused with a clear reason, the
model and history kept) and `test_limits_` (no unsafe unpickling anywhere; names and archive members
never lead a write out of its folder). A clear answer is the package's own error type (`SpecError`, `DataError`,
`CheckpointError`, exit status 2) whose message names the file; a case that loses or damages a file, or writes outside its
folder, fails with `DataLost`. `python tests/bench/fault_table.py` runs this file and prints the counts per category."""
import ast, contextlib, gzip, hashlib, io, json, os, pickle, re, struct, tarfile, urllib.error
from pathlib import Path
import numpy as np
import pytest
import torch
import modelplay as mp
import modelplay.data as D
import modelplay.datafiles as DF
from modelplay.spec import SpecError, fmt_path
from modelplay.data import DataError, Remote, download_file, fetch_data, load_data
from modelplay.checkpoint import CheckpointError, save_checkpoint, load_checkpoint, load_weights
from modelplay.pretrained import load_pretrained
from modelplay.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = {'name': 'tiny', 'input': {'shape': [1, 8, 8]}, 'dim': 16, 'stem': {'type': 'flatten', 'project': True},
        'stages': [{'depth': 1, 'layer': {'block': 'mlp'}}], 'heads': {'label': {'type': 'linear', 'classes': 4}}}


class DataLost(AssertionError):
    "A fault lost or damaged a file, left a partial one where a good one would be read, or wrote outside its folder."

def no_loss(ok, what):
    if not ok: raise DataLost(what)

def files_under(folder) -> dict:
    "relative path → sha256 of every file under `folder`, hidden ones included."
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file() or p.is_symlink()}

def html_text(s: str) -> str:
    import html
    return html.unescape(s)

def run_cli(capsys, *args):
    "(exit status, stdout, stderr) of `modelplay ARGS` run in this process."
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

def one_error_line(err: str, command: str, more_lines: bool = False) -> str:
    """The message of a refused command: one line `COMMAND: error: …`, the last on stderr, and no traceback; argparse's usage
    lines (or a note such as `training …`) may come before it. `more_lines`: the message may go on (a data set's error lists
    the files to fetch, their checksums and where to put them)."""
    lines = err.rstrip('\n').splitlines()
    assert lines and 'Traceback' not in err, err
    starts = [i for i, l in enumerate(lines) if l.startswith(f"{command}: error: ")]
    assert len(starts) == 1 and not any('error:' in l for l in lines[starts[0] + 1:]), err
    assert more_lines or starts[0] == len(lines) - 1, f"the message takes more than one line:\n{err}"
    return '\n'.join(lines[starts[0]:])

pytestmark = pytest.mark.usefixtures('one_thread')   # tests/conftest.py

@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    "The CLI's measurement cache in a temporary folder, never the user's."
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path_factory.getbasetemp() / 'xdg-cache'))


# ==== 1. YAML / spec files =============================================================================================

YAML_CASES = {   # id → (file content (bytes) or a kind of path, what the message must say)
    'syntax-error': (b'input:\n  shape: [1, 28\nstem: x\n', r'{p}:3:5: '),
    'empty': (b'', r'{p}: the file is empty'),
    'only-comments': (b'# a spec\n# (not written yet)\n', r'{p}: the file is empty'),
    'top-level-list': (b'- input\n- stem\n', r'{p}: the top level must be a mapping, got \['),
    'top-level-scalar': (b'42\n', r'{p}: the top level must be a mapping, got 42'),
    'top-level-string': (b'just some words\n', r"{p}: the top level must be a mapping, got 'just some words'"),
    'directory': ('dir', r'{p}: is a folder, expected a YAML file'),
    'unreadable': ('chmod000', r'{p}: not readable \(permission denied\)'),
    'latin-1': ('name: caf\xe9\n'.encode('latin-1'), r'{p}: not a UTF-8 text file \(invalid continuation byte at byte 9\)'),
    'utf-16': ('name: x\n'.encode('utf-16'), r'{p}: not a UTF-8 text file'),
    'nul-byte': (b'name: a\x00b\ninput: {shape: [1]}\n', r"{p}:1:8: character '\\x00' is not allowed"),
    'tab-indent': (b'input:\n\tshape: [1]\n', r'{p}:2:1: '),
    'duplicate-key': (b'input: {shape: [1, 8, 8]}\ndim: 8\ndim: 16\n', r"{p}:3:1: duplicate key 'dim' \(first at line 2\)"),
    'deep-nesting': (b'stages: ' + b'[' * 5000 + b']' * 5000 + b'\n', r'{p}: nested too deeply'),
    'python-tag': (b'!!python/object/apply:os.system ["touch {marker}"]\n', r"{p}:1:1: could not determine a constructor"),
    'missing-close-match': ('typo', r"{p}: no such file; did you mean '{d}/tiny\.yaml'\?"),
    'missing': ('absent', r'{p}: no such file$'),
}
ENTRIES = ['load_spec', 'show', 'train']

def _yaml_case(case, tmp_path, monkeypatch):
    "The path for `case` (the file written, or made a folder / unreadable / left missing) and the message pattern."
    content, want = YAML_CASES[case]
    (tmp_path / 'tiny.yaml').write_text(mp.save_spec(TINY))
    path = tmp_path / f"{case}.yaml"
    if content == 'dir': path.mkdir()
    elif content == 'typo': path = tmp_path / 'tinny.yaml'
    elif content == 'absent': path = tmp_path / 'no_spec_here.yaml'
    elif content == 'chmod000':
        path.write_text(mp.save_spec(TINY)); path.chmod(0)
        if os.access(path, os.R_OK):   # root reads anything: make reading it fail as it does for everybody else
            real = Path.read_text
            def denied(self, *a, **kw):
                if Path(self) == path: raise PermissionError(13, 'Permission denied', str(self))
                return real(self, *a, **kw)
            monkeypatch.setattr(Path, 'read_text', denied)
    else: path.write_bytes(content.replace(b'{marker}', str(tmp_path / 'pwned').encode()))
    return path, want.format(p=re.escape(str(path)), d=re.escape(str(tmp_path)))

@pytest.mark.parametrize('entry', ENTRIES)
@pytest.mark.parametrize('case', list(YAML_CASES))
def test_yaml_file_fault(case, entry, tmp_path, monkeypatch, capsys):
    path, want = _yaml_case(case, tmp_path, monkeypatch)
    before = files_under(tmp_path) if path.is_dir() or not path.exists() or os.access(path, os.R_OK) else None
    if entry == 'load_spec':
        with pytest.raises(SpecError) as e: mp.load_spec(str(path))
        msg = str(e.value)
    else:
        monkeypatch.chdir(tmp_path)
        code, out, err = run_cli(capsys, entry, path, *(['--data', 'synthetic', '--steps', 1] if entry == 'train' else []))
        assert (code, out) == (2, ''), err
        msg = one_error_line(err, f"modelplay {entry}").removeprefix(f"modelplay {entry}: error: ")
    assert re.search(want, msg, re.M), msg
    no_loss(not (tmp_path / 'pwned').exists(), 'a YAML tag ran a command')
    no_loss(not (tmp_path / 'runs').exists(), 'a refused spec left a run folder')
    if before is not None: no_loss(files_under(tmp_path) == before, 'a refused spec changed files')


# ==== 2. Data files ===================================================================================================

RNG = np.random.default_rng(0)

def idx_bytes(arr, code=0x08) -> bytes:
    "An IDX file as the MNIST publisher writes it: magic (0, type, ndim), big-endian sizes, big-endian data."
    arr = np.asarray(arr)
    return struct.pack('>HBB', 0, code, arr.ndim) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.astype(arr.dtype.newbyteorder('>')).tobytes()

def write_mnist(folder, gz=True) -> dict:
    "The four MNIST files (6 train, 3 test images), gzipped as published or unpacked; name → bytes written."
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (('train', 6), ('t10k', 3)):
        x, y = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n).astype(np.uint8)
        for kind, arr, d in (('images', x, 3), ('labels', y, 1)):
            name, data = f"{prefix}-{kind}-idx{d}-ubyte", idx_bytes(arr)
            if gz: name, data = name + '.gz', gzip.compress(data, mtime=0)
            (folder / name).write_bytes(data); out[name] = data
    return out

def cifar_records(n) -> tuple:
    "n CIFAR-10 binary records (a label byte, then 3072 pixel bytes: red, green, blue planes), the pixels and the labels."
    labels, pixels = RNG.integers(0, 10, n), RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels.reshape(n, -1)], 1).astype(np.uint8).tobytes(), pixels, labels

CIFAR_FILES = [*(f'data_batch_{i}' for i in range(1, 6)), 'test_batch']

def write_cifar(root, binary=True) -> Path:
    "CIFAR-10 in the publisher's binary (`cifar-10-batches-bin/*.bin`) or python (`cifar-10-batches-py/`, protocol-2 pickles) layout."
    folder = root / 'cifar10' / ('cifar-10-batches-bin' if binary else 'cifar-10-batches-py')
    folder.mkdir(parents=True)
    for f in CIFAR_FILES:
        raw, px, lab = cifar_records(2)
        if binary: (folder / f"{f}.bin").write_bytes(raw)
        else: (folder / f).write_bytes(pickle.dumps({b'batch_label': b'batch', b'labels': lab.tolist(), b'data': px.reshape(2, -1),
                                                    b'filenames': [b'x.png'] * 2}, protocol=2))
    return folder

class Marker:
    "Unpickling this would run a shell command that creates `path`."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (os.system, (f'touch {self.path}',))

IMAGES = 'train-images-idx3-ubyte'
IDX_CASES = {   # id → (gzipped?, what to put in place of the train images file, what the message must say)
    'gz-truncated': (True, lambda b: b[:len(b) // 2], 'the gzip data is truncated or corrupt'),
    'raw-truncated': (False, lambda b: b[:-100], 'truncated: the header says 6 x 28 x 28 items'),
    'gz-wrong-magic': (True, lambda b: gzip.compress(idx_bytes(np.zeros(6, np.uint8))), 'wrong magic number 2049; expected 2051'),
    'raw-wrong-magic': (False, lambda b: idx_bytes(np.zeros(6, np.uint8)), 'wrong magic number 2049; expected 2051'),
    'gz-empty': (True, lambda b: b'', 'empty file (0 bytes)'),
    'raw-empty': (False, lambda b: b'', 'empty file (0 bytes)'),
    'gz-longer-than-header': (True, lambda b: gzip.compress(gzip.decompress(b) + b'\0'), 'longer than its header says'),
    'raw-longer-than-header': (False, lambda b: b + b'\0', 'longer than its header says'),
    'gz-not-gzip': (True, lambda b: b'<html><body>503 Service Unavailable</body></html>', 'not gzip data'),
    'gz-of-nothing': (True, lambda b: gzip.compress(b''), 'the gzip data holds nothing'),
    'gz-folder': (True, 'dir', 'is a folder, expected the file train-images-idx3-ubyte.gz'),
    'raw-folder': (False, 'dir', 'is a folder, expected the file train-images-idx3-ubyte.gz'),
}

@pytest.mark.parametrize('case', list(IDX_CASES))
def test_data_mnist_idx_fault(case, tmp_path):
    gz, damage, want = IDX_CASES[case]
    written = write_mnist(tmp_path / 'mnist', gz)
    target = tmp_path / 'mnist' / (IMAGES + ('.gz' if gz else ''))
    if damage == 'dir': target.unlink(); target.mkdir()
    else: target.write_bytes(damage(written[target.name]))
    before = files_under(tmp_path)
    with pytest.raises(DataError) as e: load_data('mnist', root=tmp_path, download=False)
    assert str(e.value).startswith(f"{target}: ") and want in str(e.value), str(e.value)
    no_loss(files_under(tmp_path) == before, 'reading a damaged file changed the data folder')

def test_data_mnist_wrong_checksum(tmp_path):
    write_mnist(tmp_path / 'mnist')
    with pytest.raises(DataError) as e: fetch_data('mnist', tmp_path, download=False, verify=True)
    r = D.REMOTES['mnist'][0]
    assert str(e.value).startswith(f"{tmp_path / 'mnist' / r.file}: checksum mismatch: expected md5 {r.md5}"), str(e.value)

CIFAR_CASES = {   # id → (binary?, file, damage, what the message must say)
    'bin-truncated': (True, 'data_batch_3.bin', lambda b: b[:-7], 'is not a whole number of 3,073-byte records'),
    'bin-empty': (True, 'test_batch.bin', lambda b: b'', 'empty file (0 bytes)'),
    'bin-label-out-of-range': (True, 'data_batch_1.bin', lambda b: bytes([12]) + b[1:], 'label 12 is out of range (expected 0..9)'),
    'py-truncated': (False, 'data_batch_2', lambda b: b[:len(b) // 2], 'cannot read it as a CIFAR python file'),
    'py-empty': (False, 'test_batch', lambda b: b'', 'empty file (0 bytes)'),
    'py-not-a-batch': (False, 'data_batch_1', lambda b: pickle.dumps([1, 2, 3], protocol=2), "expected a dict with b'data' (N, 3072) uint8"),
    'py-gzipped': (False, 'data_batch_1', lambda b: gzip.compress(b), 'cannot read it as a CIFAR python file'),
    'py-runs-code': (False, 'data_batch_4', 'evil', f'refused to unpickle {os.system.__module__}.system'),
}

@pytest.mark.parametrize('case', list(CIFAR_CASES))
def test_data_cifar_fault(case, tmp_path):
    binary, name, damage, want = CIFAR_CASES[case]
    target = write_cifar(tmp_path, binary) / name
    marker = tmp_path / 'pwned'
    target.write_bytes(pickle.dumps({b'data': Marker(marker)}, protocol=2) if damage == 'evil' else damage(target.read_bytes()))
    before = files_under(tmp_path)
    with pytest.raises(DataError) as e: load_data('cifar10', root=tmp_path, download=False)
    assert str(e.value).startswith(f"{target}: ") and want in str(e.value), str(e.value)
    no_loss(not marker.exists(), 'a pickle ran a command')
    no_loss(files_under(tmp_path) == before, 'reading a damaged file changed the data folder')

def _tarball(path, src, top, extra=()):
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(src, arcname=top)
        for info, data in extra: tar.addfile(info, io.BytesIO(data) if data is not None else None)

@pytest.mark.parametrize('case', ['truncated', 'not-gzip', 'empty'])
def test_data_cifar_archive_fault(case, tmp_path):
    "A damaged publisher's tarball is refused and leaves no half-unpacked folder (which would be read as data next time)."
    good = write_cifar(tmp_path / 'src')
    folder = tmp_path / 'data' / 'cifar10'; folder.mkdir(parents=True)
    archive = folder / 'cifar-10-binary.tar.gz'
    _tarball(archive, good, 'cifar-10-batches-bin')
    whole = archive.read_bytes()
    archive.write_bytes({'truncated': whole[:len(whole) * 2 // 3], 'not-gzip': b'<html>moved</html>', 'empty': b''}[case])
    with pytest.raises(DataError) as e: load_data('cifar10', root=tmp_path / 'data', download=False)
    assert str(e.value).startswith(f"{archive}: cannot unpack it") and 'Delete it and load again' in str(e.value), str(e.value)
    no_loss(sorted(os.listdir(folder)) == ['cifar-10-binary.tar.gz'], f"left behind: {sorted(os.listdir(folder))}")

TEXT_CASES = {'empty': (b'', 'empty file (0 bytes)'), 'latin-1': ('caf\xe9'.encode('latin-1'), 'not UTF-8 text (byte 3'),
              'folder': ('dir', 'is a folder, expected the file input.txt')}

@pytest.mark.parametrize('case', list(TEXT_CASES))
def test_data_text_fault(case, tmp_path):
    content, want = TEXT_CASES[case]
    target = tmp_path / 'tinyshakespeare' / 'input.txt'
    target.parent.mkdir()
    if content == 'dir': target.mkdir()
    else: target.write_bytes(content)
    with pytest.raises(DataError) as e: load_data('tinyshakespeare', root=tmp_path, download=False)
    assert str(e.value).startswith(f"{target}: ") and want in str(e.value), str(e.value)

# --- downloads cut short: nothing is left where a good file would later be read

class Response(io.BytesIO):
    "What `urlopen` returns: a readable body with headers; `fail_after` bytes, then `error` raised from `read`."
    def __init__(self, data, fail_after=None, error=None):
        super().__init__(data); self.headers = {'Content-Length': str(len(data))}
        self.fail_after, self.error = fail_after, error
    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after: raise self.error
        return super().read(n if self.fail_after is None else min(n if n >= 0 else 1 << 30, self.fail_after - self.tell()))

@pytest.fixture
def tiny_mnist_remotes(tmp_path, monkeypatch):
    "MNIST's remotes replaced by tiny files with their own checksums; (server folder, name → bytes)."
    server = tmp_path / 'server'
    written = write_mnist(server)
    remotes = tuple(Remote(name, (f"https://a.example/{name}", f"https://b.example/{name}"),
                           hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(), len(data)) for name, data in written.items())
    monkeypatch.setitem(D.REMOTES, 'mnist', remotes)
    return server, written

DOWNLOAD_CASES = {   # id → (what the server does with a file's bytes, the exception expected, what its message must say)
    'connection-reset': (lambda d: Response(d, len(d) // 2, ConnectionResetError('connection reset by peer')), DataError, 'ConnectionResetError'),
    'timeout': (lambda d: Response(d, 10, TimeoutError('timed out')), DataError, 'TimeoutError'),
    'ctrl-c': (lambda d: Response(d, len(d) // 2, KeyboardInterrupt()), KeyboardInterrupt, ''),
    'wrong-bytes': (lambda d: Response(d[:-1] + bytes([d[-1] ^ 1])), DataError, 'checksum mismatch: expected md5'),
    'short-body': (lambda d: Response(d[:len(d) // 2]), DataError, 'checksum mismatch'),
    'error-page': (lambda d: Response(b'<html>404 Not Found</html>'), DataError, 'checksum mismatch'),
    'offline': ('offline', DataError, 'URLError'),
}

@pytest.mark.parametrize('case', list(DOWNLOAD_CASES))
def test_data_download_cut_short(case, tmp_path, tiny_mnist_remotes):
    server, written = tiny_mnist_remotes
    behave, exc, want = DOWNLOAD_CASES[case]
    def bad(url, timeout):
        if behave == 'offline': raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
        return behave(written[url.rsplit('/', 1)[-1]])
    with pytest.raises(exc) as e: load_data('mnist', root=tmp_path / 'data', opener=bad)
    if exc is DataError: assert str(e.value).startswith('mnist: downloading failed') and want in str(e.value), str(e.value)
    left = sorted(os.listdir(tmp_path / 'data' / 'mnist'))
    no_loss(left == [], f"a download cut short left {left} where the files are read")
    good = lambda url, timeout: Response(written[url.rsplit('/', 1)[-1]])
    assert len(load_data('mnist', root=tmp_path / 'data', opener=good).train) == 6   # the next attempt starts clean and loads

def test_data_failed_download_keeps_the_file_in_place(tmp_path):
    "A download into a folder that already holds the file leaves that file as it was when the new one fails."
    (tmp_path / 'hello.txt').write_bytes(b'hello')
    r = Remote('hello.txt', ('https://a.example/hello.txt',), hashlib.md5(b'hello').hexdigest(), hashlib.sha256(b'hello').hexdigest(), 5)
    with pytest.raises(DataError, match='checksum mismatch'): download_file(r, tmp_path, lambda url, timeout: Response(b'HELLO'))
    no_loss(files_under(tmp_path) == {'hello.txt': hashlib.sha256(b'hello').hexdigest()}, 'the file in place was changed')


# ==== 3. Checkpoints ==================================================================================================

@pytest.fixture(scope='module')
def good_ckpt(tmp_path_factory):
    "The bytes of a checkpoint of the tiny model."
    path = save_checkpoint(mp.build(TINY, seed=0), tmp_path_factory.mktemp('ckpt') / 'good.safetensors', step=1)
    return path.read_bytes()

def header_len(data) -> int: return struct.unpack('<Q', data[:8])[0]

def with_header(data, change) -> bytes:
    "`data` with its JSON header passed through `change(header)`."
    n = header_len(data)
    header = json.loads(data[8:8 + n]); change(header)
    raw = json.dumps(header).encode()
    return struct.pack('<Q', len(raw)) + raw + data[8 + n:]

READERS = {'load_checkpoint': load_checkpoint, 'load_weights': lambda p: load_weights(mp.build(TINY), p),
           'load_pretrained': lambda p: load_pretrained(mp.build(TINY), p)}

def refused(path, read, *words):
    with pytest.raises(CheckpointError) as e: read(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and all(w in msg for w in words), msg

CUTS = {'empty': lambda d: 0, 'length-field': lambda d: 5, 'mid-header': lambda d: 8 + header_len(d) // 2,
        'end-of-header': lambda d: 8 + header_len(d), 'mid-data': lambda d: (8 + header_len(d) + len(d)) // 2, 'last-byte': lambda d: len(d) - 1}

@pytest.mark.parametrize('reader', ['load_checkpoint', 'load_weights'])
@pytest.mark.parametrize('cut', list(CUTS))
def test_ckpt_truncated(cut, reader, good_ckpt, tmp_path):
    path = tmp_path / 'cut.safetensors'
    path.write_bytes(good_ckpt[:CUTS[cut](good_ckpt)])
    refused(path, READERS[reader], 'truncated')

def _offsets_past_end(h):
    k = next(k for k in h if k != '__metadata__'); lo, hi = h[k]['data_offsets']; h[k]['data_offsets'] = [lo + 10**6, hi + 10**6]

TAMPERED = {   # id → (new file bytes from the good ones, words the message must hold)
    'header-not-json': (lambda d: d[:8] + b'[' + d[9:], ('damaged header', 'not valid JSON')),
    'length-past-end': (lambda d: struct.pack('<Q', len(d)) + d[8:], ('header',)),
    'length-2**63': (lambda d: struct.pack('<Q', 2 ** 63) + d[8:], ('header',)),
    'length-short': (lambda d: struct.pack('<Q', header_len(d) - 3) + d[8:], ('damaged header',)),
    'dtype-changed': (lambda d: with_header(d, lambda h: h['stem.proj.weight'].update(dtype='F16')), ('damaged header', "'stem.proj.weight'")),
    'offsets-past-end': (lambda d: with_header(d, _offsets_past_end), ('truncated',)),
    'metadata-not-strings': (lambda d: with_header(d, lambda h: h['__metadata__'].update(extra=5)), ('damaged header', '__metadata__')),
    'spec-not-json': (lambda d: with_header(d, lambda h: h['__metadata__'].update(spec='{"input": ')), ('damaged header', "'spec' is not valid JSON")),
    'checksums-not-json': (lambda d: with_header(d, lambda h: h['__metadata__'].update(crc32='{')), ('damaged header', "'crc32'")),
}

@pytest.mark.parametrize('case', list(TAMPERED))
def test_ckpt_tampered_header(case, good_ckpt, tmp_path):
    change, words = TAMPERED[case]
    path = tmp_path / 'tampered.safetensors'
    path.write_bytes(change(good_ckpt))
    refused(path, load_checkpoint, *words)

@pytest.mark.parametrize('reader', list(READERS))
def test_ckpt_tampered_tensor_bytes(reader, good_ckpt, tmp_path):
    "A flipped bit in the tensor data is caught by the CRC-32 stored per tensor, and nothing is loaded."
    data = bytearray(good_ckpt)
    data[8 + header_len(good_ckpt) + 5] ^= 0x04
    path = tmp_path / 'flipped.safetensors'; path.write_bytes(bytes(data))
    refused(path, READERS[reader], 'damaged data', 'CRC-32')

def test_ckpt_tampered_checksum(good_ckpt, tmp_path):
    def change(h):
        sums = json.loads(h['__metadata__']['crc32']); sums['stem.proj.bias'] ^= 1; h['__metadata__']['crc32'] = json.dumps(sums)
    path = tmp_path / 'crc.safetensors'; path.write_bytes(with_header(good_ckpt, change))
    refused(path, load_checkpoint, 'damaged data', "'stem.proj.bias'")

def _same_weights(model, before): return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

@pytest.mark.parametrize('how', ['load_weights', 'load_pretrained', 'load_pretrained-strict'])
def test_ckpt_incompatible_spec(how, good_ckpt, tmp_path):
    "A checkpoint of the dim-16 model into the dim-32 one: refused by name and shape, and the model keeps every weight it had."
    path = tmp_path / 'dim16.safetensors'; path.write_bytes(good_ckpt)
    model = mp.build(TINY, ['dim=32'], seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    read = {'load_weights': lambda p: load_weights(model, p), 'load_pretrained': lambda p: load_pretrained(model, p),
            'load_pretrained-strict': lambda p: load_pretrained(model, p, strict=True)}[how]
    refused(path, read, *(('nothing in it fits',) if how == 'load_pretrained' else ('does not fit', '(16, 64) in the checkpoint, (32, 64) in the model')))
    no_loss(_same_weights(model, before), 'a refused load changed the model')

def test_ckpt_spec_in_header_does_not_match_tensors(good_ckpt, tmp_path):
    "The header's spec edited (5 classes instead of 4): the model it builds does not fit the tensors, and that is what is said."
    def change(h):
        spec = json.loads(h['__metadata__']['spec']); spec['heads']['label']['classes'] = 5; h['__metadata__']['spec'] = json.dumps(spec)
    path = tmp_path / 'edited.safetensors'; path.write_bytes(with_header(good_ckpt, change))
    refused(path, load_checkpoint, 'does not fit', 'nothing was loaded')

@pytest.mark.parametrize('reader', list(READERS) + ['read_checkpoint_meta'])
def test_ckpt_folder_where_the_file_should_be(reader, tmp_path):
    (tmp_path / 'model.safetensors').mkdir()
    refused(tmp_path / 'model.safetensors', READERS.get(reader, mp.read_checkpoint_meta), 'is a folder')

@pytest.mark.parametrize('case', ['folder', 'parent-is-a-file', 'not-plain-extra', 'meta-device', 'writer-crash'])
def test_ckpt_failed_save_keeps_what_was_there(case, good_ckpt, tmp_path, monkeypatch):
    "A save that fails says why and leaves the folder exactly as it was: the previous checkpoint whole, no temporary files."
    (tmp_path / 'run.safetensors').write_bytes(good_ckpt)
    (tmp_path / 'folder.safetensors').mkdir()
    model = mp.build(TINY, seed=3)
    before = files_under(tmp_path), sorted(p.name for p in tmp_path.rglob('*'))
    path, kw, words = tmp_path / 'run.safetensors', {}, ()
    if case == 'folder': path, words = tmp_path / 'folder.safetensors', ('is a folder',)
    elif case == 'parent-is-a-file': path, words = tmp_path / 'run.safetensors' / 'x.safetensors', ('is a file, not a folder',)
    elif case == 'not-plain-extra': kw, words = {'optimizer': object()}, ("extra 'optimizer' cannot be stored",)
    elif case == 'meta-device': model, words = mp.build(TINY, device='meta'), ('meta device',)
    else:
        import safetensors.torch
        def crash(tensors, filename, metadata=None):
            Path(filename).write_bytes(b'\0' * 100)        # half a file, then the disk is full
            raise OSError(28, 'No space left on device')
        monkeypatch.setattr(safetensors.torch, 'save_file', crash)
        words = ('could not write the checkpoint', 'No space left on device')
    refused(path, lambda p: save_checkpoint(model, p, **kw), *words)
    no_loss((files_under(tmp_path), sorted(p.name for p in tmp_path.rglob('*'))) == before, 'a failed save changed the folder')
    assert load_checkpoint(tmp_path / 'run.safetensors').spec['dim'] == 16

PICKLES = {   # id → (file name, how it is written)
    'pt-runs-code': ('payload.pt', lambda p, m: torch.save({'stem.proj.bias': torch.zeros(16), 'x': Marker(m)}, p)),
    'pth-custom-class': ('custom.pth', lambda p, m: torch.save({'w': torch.zeros(1), 'cfg': DataLost('x')}, p)),
    'bin-runs-code': ('pytorch_model.bin', lambda p, m: torch.save({'x': Marker(m)}, p)),
    'legacy-pickle-runs-code': ('old.pt', lambda p, m: torch.save({'x': Marker(m)}, p, _use_new_zipfile_serialization=False)),
    'bare-pickle-runs-code': ('bare.ckpt', lambda p, m: p.write_bytes(pickle.dumps({'x': Marker(m)}))),
    'pickle-named-safetensors': ('sneaky.safetensors', lambda p, m: torch.save({'x': Marker(m)}, p)),
}

@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
@pytest.mark.parametrize('case', list(PICKLES))
def test_ckpt_pickle_that_runs_code_is_refused(case, tmp_path):
    name, write = PICKLES[case]
    path, marker = tmp_path / name, tmp_path / 'pwned'
    write(path, marker)
    for read in (READERS['load_weights'], READERS['load_pretrained']):
        refused(path, read, *(('header',) if name.endswith('.safetensors') else ('refused',)))
    no_loss(not marker.exists(), 'unpickling ran a command')


# ==== 4. CLI ==========================================================================================================

@pytest.fixture(scope='module')
def spec_file(tmp_path_factory):
    "A tiny valid spec file (8×8 inputs, 4 classes: the synthetic data set)."
    path = tmp_path_factory.mktemp('spec') / 'tiny.yaml'
    path.write_text(mp.save_spec(TINY))
    return path

CLI_CASES = {   # id → (arguments ({spec}, {dir}, {file} filled in), what the error line must say)
    'no-command': ([], None),
    'unknown-command': (['frobnicate'], "invalid choice: 'frobnicate'"),
    'unknown-global-option': (['--bogus', 'list'], 'unrecognized arguments: --bogus'),
    'list-unknown-option': (['list', '--bogus'], 'unrecognized arguments: --bogus'),
    'list-too-many-words': (['list', 'mixers', 'mha', 'extra'], 'unrecognized arguments: extra'),
    'list-unknown-kind': (['list', 'mixr'], "nothing to list called 'mixr'; did you mean 'mixers'"),
    'list-unknown-component': (['list', 'mixers', 'nosuch'], "unknown mixers component 'nosuch'"),
    'list-registries-with-name': (['list', 'registries', 'x'], '`list registries` takes no name'),
    'list-no-preset-matches': (['list', 'presets', 'zzz/none'], "no preset matches 'zzz/none'"),
    'show-no-spec': (['show'], 'the following arguments are required: spec'),
    'show-depth-0': (['show', '{spec}', '--depth', '0'], 'argument --depth: must be at least 1, got 0'),
    'show-depth-word': (['show', '{spec}', '--depth', 'deep'], "argument --depth: 'deep' is not a whole number"),
    'show-unknown-preset': (['show', 'mnist/cnn8k'], "no preset or file named 'mnist/cnn8k'; did you mean 'mnist/cnn_8k'"),
    'show-folder': (['show', '{dir}'], 'is a folder, expected a YAML file'),
    'show-bad-override-key': (['show', '{spec}', 'stages.0.layer.mixr=mha'], "stages[0].layer.mixr: unknown key"),
    'summary-unknown-preset': (['summary', 'mnist/cnn8k'], "did you mean 'mnist/cnn_8k'"),
    'spec-no-spec': (['spec'], 'the following arguments are required: spec'),
    'spec-override-no-value': (['spec', '{spec}', 'stages.0.depth'], "override 'stages.0.depth' must look like key.path=value"),
    'spec-override-bad-yaml': (['spec', '{spec}', 'dim=[1,'], "override 'dim=[1,': value is not valid YAML"),
    'spec-out-is-folder': (['spec', '{spec}', '-o', '{dir}'], 'Is a folder, not a file: {dir}'),
    'spec-out-under-file': (['spec', '{spec}', '-o', '{file}/x.yaml'], 'Not a folder: {file}'),
    'train-no-spec': (['train'], 'the following arguments are required: spec'),
    'train-steps-0': (['train', '{spec}', '--steps', '0'], 'argument --steps: must be at least 1, got 0'),
    'train-steps-word': (['train', '{spec}', '--steps', 'many'], "argument --steps: 'many' is not a whole number"),
    'train-epochs-0': (['train', '{spec}', '--epochs', '0'], 'argument --epochs: must be a finite number more than 0'),
    'train-epochs-negative': (['train', '{spec}', '--epochs=-1'], 'argument --epochs: must be a finite number more than 0'),
    'train-epochs-inf': (['train', '{spec}', '--epochs', 'inf'], 'argument --epochs: must be a finite number more than 0'),
    'train-epochs-nan': (['train', '{spec}', '--epochs', 'nan'], 'argument --epochs: must be a finite number more than 0'),
    'train-lr-negative': (['train', '{spec}', '--lr=-1e-3'], 'argument --lr: must be a finite number, 0 or more'),
    'train-lr-inf': (['train', '{spec}', '--lr', 'inf'], 'argument --lr: must be a finite number, 0 or more'),
    'train-lr-word': (['train', '{spec}', '--lr', 'fast'], "argument --lr: 'fast' is not a number"),
    'train-batch-size-0': (['train', '{spec}', '--batch-size', '0'], 'argument --batch-size: must be at least 1'),
    'train-seed-word': (['train', '{spec}', '--seed', 'x'], "argument --seed: invalid int value: 'x'"),
    'train-nproc-0': (['train', '{spec}', '--nproc', '0'], 'argument --nproc: must be at least 1'),
    'train-budget-word': (['train', '{spec}', '--budget', 'soon'], "'soon' is not a wall time"),
    'train-steps-and-epochs': (['train', '{spec}', '--steps', '2', '--epochs', '1'], 'not allowed with argument'),
    'train-unknown-data': (['train', '{spec}', '--data', 'mnsit'], "unknown data set 'mnsit'; did you mean 'mnist'"),
    'train-no-data': (['train', '{spec}', '--steps', '1'], 'no data set to train on: pass --data NAME'),
    'train-unknown-device': (['train', '{spec}', '--data', 'synthetic', '--device', 'tpu'], "device = 'tpu' is not valid"),
    'train-out-is-file': (['train', '{spec}', '--data', 'synthetic', '--steps', '1', '--out', '{file}'], 'is a file, not a folder'),
    'train-out-under-file': (['train', '{spec}', '--data', 'synthetic', '--steps', '1', '--out', '{file}/run'], 'is a file, not a folder'),
    'train-batch-bigger-than-data': (['train', '{spec}', '--data', 'synthetic', '--steps', '1', '--batch-size', '100000', '--out', '{dir}/run'],
                                     'batch_size=100000 is more than the 512 training samples'),
    'train-image-model-on-text': (['train', '{spec}', '--data', 'synthetic_text', '--steps', '1'], 'is a classify model but synthetic_text is a causal_lm data set'),
    'train-input-shape-mismatch': (['train', '{spec}', 'input.shape=[3,8,8]', '--data', 'synthetic', '--steps', '1'], 'takes input [3, 8, 8] but synthetic has [1, 8, 8]'),
    'train-too-few-classes': (['train', '{spec}', 'heads.label.classes=2', '--data', 'synthetic', '--steps', '1'], 'predicts 2 classes but synthetic has 4'),
    'bench-no-spec': (['bench'], 'the following arguments are required'),
    'bench-format': (['bench', '{spec}', '--format', 'xml'], "argument --format: invalid choice: 'xml'"),
    'bench-metrics': (['bench', '{spec}', '--metrics', 'params,sped'], "unknown metrics ['sped']"),
    'bench-batch-size-0': (['bench', '{spec}', '--batch-size', '0'], 'argument --batch-size: must be at least 1'),
    'bench-steps-0': (['bench', '{spec}', '--steps', '0'], 'argument --steps: must be at least 1'),
    'bench-budget-word': (['bench', '{spec}', '--budget', 'soon'], "'soon' is not a wall time"),
    'bench-plot-without-data': (['bench', '{spec}', '--plot', '{dir}/b.png'], '--plot draws accuracy against size: give --data'),
    'bench-out-is-folder': (['bench', '{spec}', '--metrics', 'params', '--out', '{dir}'], 'is a folder; give a file name'),
    'bench-plot-is-folder': (['bench', '{spec}', '--data', 'synthetic', '--steps', '1', '--plot', '{dir}'], 'is a folder; give a file name'),
    'bench-unknown-preset': (['bench', '{spec}', 'mnist/cnn8k'], "did you mean 'mnist/cnn_8k'"),
    'demo-extra-word': (['demo', 'extra'], 'unrecognized arguments: extra'),
    'demo-budget-word': (['demo', '--budget', 'x'], "argument --budget: 'x' is not a wall time"),
    'demo-out-is-file': (['demo', '--out', '{file}'], 'is a file, not a folder'),
}

@pytest.mark.parametrize('case', list(CLI_CASES))
def test_cli_bad_arguments(case, spec_file, tmp_path, monkeypatch, capsys):
    "Exit status 2, nothing on stdout, one error line on stderr (after argparse's usage lines), no traceback; nothing written."
    args, want = CLI_CASES[case]
    (tmp_path / 'folder').mkdir(); (tmp_path / 'a_file').write_text('keep me\n')
    fill = lambda a: a.format(spec=spec_file, dir=tmp_path / 'folder', file=tmp_path / 'a_file')
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    code, out, err = run_cli(capsys, *map(fill, args))
    assert (code, out) == (2, ''), (code, out, err)
    command = 'modelplay' + (f" {args[0]}" if args and not args[0].startswith('-') and args[0] != 'frobnicate' else '')
    if case == 'no-command': assert err.startswith('usage: modelplay') and 'Traceback' not in err, err
    else:
        line = one_error_line(err, command)
        if want: assert fill(want) in line, line
    no_loss(files_under(tmp_path) == before and sorted(os.listdir(tmp_path)) == ['a_file', 'folder'] and not os.listdir(tmp_path / 'folder'),
            f"a refused command wrote files: {sorted(os.listdir(tmp_path))}")

DEBUG_CASES = {   # id → arguments whose error, with --debug, comes with its traceback
    'list': ['list', 'mixr'], 'show': ['show', 'mnist/cnn8k'], 'summary': ['summary', '{dir}'], 'spec': ['spec', '{spec}', 'dim=[1,'],
    'train': ['train', '{spec}', '--data', 'mnsit'], 'bench': ['bench', '{spec}', '--metrics', 'sped'], 'demo': ['demo', '--out', '{dir}/demo'],
}

@pytest.mark.parametrize('command', list(DEBUG_CASES))
def test_cli_debug_shows_the_traceback(command, spec_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('MODELPLAY_DATA', str(tmp_path / 'no_data'))                 # demo: no MNIST here, and no network
    def offline(url, timeout): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(DF, '_urlopen', offline)
    (tmp_path / 'folder').mkdir()
    args = [a.format(spec=spec_file, dir=tmp_path / 'folder') for a in DEBUG_CASES[command]]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and 'Traceback' not in err, err
    plain = one_error_line(err, f"modelplay {command}", more_lines=command == 'demo')
    code, out, err = run_cli(capsys, *args, '--debug')
    assert (code, out) == (2, '') and 'Traceback (most recent call last):' in err, err
    assert err.rstrip().endswith(plain)
    no_loss(not (tmp_path / 'folder' / 'demo').exists(), 'a failed demo left its output folder')

def test_cli_bad_spec_never_replaces_the_output(spec_file, tmp_path, capsys):
    "`modelplay spec -o FILE` with a spec that does not resolve leaves FILE as it was."
    out = tmp_path / 'mine.yaml'; out.write_text('# my notes\n')
    code, _, err = run_cli(capsys, 'spec', spec_file, 'stages.0.depth=-1', '-o', out)
    assert code == 2 and 'stages[0].depth: must be >= 0, got -1' in one_error_line(err, 'modelplay spec')
    no_loss(out.read_text() == '# my notes\n' and sorted(os.listdir(tmp_path)) == ['mine.yaml'], 'the output file was changed')


# ==== 5. Widgets ======================================================================================================

def _bad_values(row) -> list:
    "Values the row's field does not allow: outside its bounds, not finite, not YAML, of another type, not a known choice."
    f, b, kind = row.field, row.field.bounds, row.kind
    out = []
    if kind in ('int', 'float') and b is not None:
        step = 1 if kind == 'int' else 0.5
        if b.lo is not None: out.append(type(step)(b.lo) - step)
        if b.hi is not None: out.append(type(step)(b.hi) + step)
    if kind == 'float': out += [float('nan'), float('inf'), float('-inf')]
    if kind == 'yaml': out += ['[1, 2', '{a: 1', 'not: [valid', '"a string"']
    if kind == 'str' and f.name != 'name': out += ['no_such_choice']
    return out

def _shown_at(panel, path) -> bool:
    "Is a message shown at `path`'s row, or at the component (or stage) around it?"
    return any((r := panel._rows.get(path[:k])) is not None and r.error.value for k in range(len(path), 0, -1))

def _restore(row, text):
    if row.kind == 'yaml': row.input.value = text
    elif text is not None: row.input.value = text

@pytest.fixture(scope='module')
def panels():
    pytest.importorskip('ipywidgets')
    from modelplay.widgets import BuilderPanel
    made = {}
    def get(name):
        if name not in made: made[name] = BuilderPanel(name)
        return made[name]
    yield get
    for p in made.values(): p.close()

@pytest.mark.parametrize('preset', ['mnist/vit_38k', 'cifar10/convnext_18k', 'text/gpt_char'])
def test_widget_every_field_refuses_invalid_values(preset, panels, record_property):
    """Each numeric, text and YAML field of the builder, given each value it does not allow: a message next to the field
    (or its component), the last valid model kept (not rebuilt), no exception out of the widget; then the value put back clears it."""
    from modelplay.widgets import FieldRow
    p = panels(preset)
    assert not p.errors, p.errors
    tried, failures = 0, []
    for path in [k for k, r in p._rows.items() if isinstance(r, FieldRow)]:
        for bad in _bad_values(p._rows[path]):
            row = p._rows.get(path)                        # the form is redrawn after a reload
            tried += 1
            was_null = row.toggle is not None and not row.toggle.value
            if was_null: row.toggle.value = True          # ticked: the field's lowest valid value, a model of its own
            good = p.stats
            text = row.input.value if row.kind in ('yaml', 'str') else row.value
            try:
                row.input.value = bad
                if not _shown_at(p, path): failures.append(f"{fmt_path(path)} = {bad!r}: no message next to the field ({p.errors})")
                elif p.stats is not good: failures.append(f"{fmt_path(path)} = {bad!r}: the model was rebuilt")
            except Exception as e: failures.append(f"{fmt_path(path)} = {bad!r}: {type(e).__name__} escaped: {e}")
            finally:
                _restore(row, text)
            if was_null: row.toggle.value = False
            if p.errors or row.error.value or (not was_null and p.stats.spec != good.spec):
                failures.append(f"{fmt_path(path)} = {bad!r}: putting the value back left {p.errors or row.error.value or 'another model'}")
                p.load(preset)
    record_property('cases', tried); record_property('failed', len(failures))
    assert tried > 20 and not failures, '\n'.join(failures)

TRAIN_FIELDS = {   # panel field → values it must not run with
    'lr': [0.0, -1.0, float('nan'), float('inf')], 'epochs': [0.0, -3.0], 'budget': ['soon', '0s', '-5s', '', '1 fortnight'],
    'batch': [0, -5], 'samples': [-10]}

def test_widget_train_and_bench_fields_refuse_invalid_values(record_property):
    """The Train and Bench panels, each field given each value it must not run with: either the field bounds it to a valid value,
    or a message shows next to it and Start (Run) is held back; the value put back clears it."""
    pytest.importorskip('ipywidgets')
    from modelplay.widgets import TrainPanel, BenchPanel
    tp, bp = TrainPanel('mnist/cnn_8k'), BenchPanel('mnist/cnn_8k', bench=lambda *a, **k: None)
    tried, failures = 0, []
    for panel, name, widget, until in [(tp, f, getattr(tp, f), 'budget' if f == 'budget' else 'epochs') for f in TRAIN_FIELDS] + \
                                      [(bp, 'budget', bp.budget, None)]:
        if until: tp.until.value = until
        button = tp.start_button if panel is tp else bp.run_button
        for bad in TRAIN_FIELDS[name]:
            tried += 1
            good = widget.value
            try:
                widget.value = bad
                v = widget.value
                bounded = v != bad and not (isinstance(bad, float) and v != v)
                shown = any(name.replace('lr', 'learning rate') == k for k in (panel.checks.problems() or {}))
                if bounded and getattr(widget, 'min', None) is not None and v < widget.min: failures.append(f"{name}={bad!r}: bounded to {v!r}, below its min")
                if not bounded and not (shown and button.disabled): failures.append(f"{name}={bad!r}: accepted (no message, {button.description} enabled)")
            except Exception as e: failures.append(f"{name}={bad!r}: {type(e).__name__} escaped: {e}")
            finally: widget.value = good
            if panel.checks.problems() or button.disabled: failures.append(f"{name}: putting {good!r} back left {panel.checks.problems()}")
    record_property('cases', tried); record_property('failed', len(failures))
    assert tried >= 15 and not failures, '\n'.join(failures)

def test_widget_choices_offer_only_valid_values(panels, record_property):
    "Dropdowns (choices and component slots) list only what the spec accepts, so they cannot hold an invalid value."
    from modelplay.widgets import FieldRow, ComponentEditor
    from modelplay.registry import REGISTRIES
    p, n = panels('mnist/vit_38k'), 0
    for path, r in p._rows.items():
        if isinstance(r, FieldRow) and r.kind == 'choice' and path != ('input',):
            n += 1; assert {v for _, v in r.input.options} == set(r.field.choices), path
        elif isinstance(r, ComponentEditor) and path[-1] != r.reg.type_key:
            n += 1; assert {v for _, v in r.dropdown.options} - {'(none)'} == set(REGISTRIES[r.kind].names()), path
    record_property('cases', n)

def test_widget_stage_depth_zero_is_refused_at_the_field(panels):
    "The spec allows an empty stage; the builder's depth field does not (✕ removes a stage): refused there, the spec untouched."
    p = panels('mnist/vit_38k')
    good, row = p.stats, p.field('stages[0].depth')
    row.input.value = 0
    assert 'must be &gt;= 1, got 0' in row.error.value and p.spec['stages'][0]['depth'] == 4 and p.stats is good
    row.input.value = 4
    assert row.error.value == '' and p.spec['stages'][0]['depth'] == 4 and not p.errors

def test_widget_part_that_cannot_run_is_named():
    "A value the spec accepts but the layer cannot run with (a free-text parameter checked only in forward) is shown at that layer."
    pytest.importorskip('ipywidgets')
    from modelplay.widgets import BuilderPanel
    from modelplay.registry import ACTIVATIONS

    @ACTIVATIONS.register('fragile_act')
    class FragileAct(torch.nn.Module):
        "An activation whose free-text `mode` is looked at only when it runs."
        def __init__(self, mode: str = 'gelu'): super().__init__(); self.mode = mode
        def forward(self, x):
            if self.mode != 'gelu': raise ValueError(f"mode must be 'gelu', got {self.mode!r}")
            return torch.nn.functional.gelu(x)

    raw = mp.load_raw('cifar10/convnext_18k')[0]; raw['stages'][1]['layer']['act'] = {'type': 'fragile_act'}
    p = BuilderPanel(raw)
    try:
        good = p.stats
        path = next(k for k in p._rows if k[-1] == 'mode')
        p._rows[path].input.value = 'bogus'
        assert p.errors and p.errors[0][0] == fmt_path(path[:path.index('layer') + 1]) and p.stats is good, p.errors
        assert "mode must be" in p._row_for(p.errors[0][0]).error.value
        p._rows[path].input.value = 'gelu'
        assert not p.errors
    finally:
        p.close(); ACTIVATIONS.unregister('fragile_act')

YAML_PANE = {   # id → (text typed into the YAML pane, what the message must say)
    'syntax-error': ('stages: [unclosed', 'YAML:1:18'),
    'top-level-list': ('- a\n- b\n', 'the top level must be a mapping'),
    'duplicate-key': ('dim: 8\ndim: 16\n', "duplicate key 'dim'"),
    'nul-byte': ('name: a\x00b\n', "character '\\x00' is not allowed"),
}

@pytest.mark.parametrize('case', list(YAML_PANE))
def test_widget_yaml_pane_refuses_bad_text(case, panels):
    p = panels('mnist/vit_38k')
    spec, good = json.dumps(p.spec, sort_keys=True), p.stats
    text, want = YAML_PANE[case]
    p.yaml.value = text
    assert want in html_text(p.message.value) and 'color:#c62828' in p.message.value, p.message.value
    assert json.dumps(p.spec, sort_keys=True) == spec and p.stats is good   # the panel keeps the last spec
    p.load('mnist/vit_38k')

def test_widget_yaml_pane_invalid_spec_marks_the_fields(panels):
    p = panels('mnist/vit_38k')
    good = p.stats
    raw = mp.load_raw('mnist/vit_38k')[0]; raw['dim'] = 0; raw['stages'][0]['layer']['mixer']['dropout'] = 2.0
    p.yaml.value = mp.save_spec(raw)
    assert {'dim', 'stages[0].layer.mixer.dropout'} <= {e for e, _ in p.errors}, p.errors
    assert p.field('dim').error.value and p.field('stages[0].layer.mixer.dropout').error.value and p.stats is good
    p.load('mnist/vit_38k')
    assert not p.errors

@pytest.mark.parametrize('case', ['folder', 'under-a-file'])
def test_widget_save_to_a_bad_path(case, panels, tmp_path):
    p = panels('mnist/vit_38k')
    (tmp_path / 'folder.yaml').mkdir(); (tmp_path / 'file').write_text('keep\n')
    before = files_under(tmp_path)
    target = tmp_path / 'folder.yaml' if case == 'folder' else tmp_path / 'file' / 'x.yaml'
    assert p.save(target) is None and 'not saved' in p.message.value and str(target.parent if case != 'folder' else target) in html_text(p.message.value)
    no_loss(files_under(tmp_path) == before and sorted(os.listdir(tmp_path)) == ['file', 'folder.yaml'], 'a failed save changed files')


# ==== 6. Limits =======================================================================================================

UNSAFE = {   # call → the keyword that makes it safe (None: never allowed)
    'pickle.load': None, 'pickle.loads': None, 'pickle.Unpickler': None, 'cPickle.load': None, 'dill.load': None, 'dill.loads': None,
    'joblib.load': None, 'marshal.load': None, 'marshal.loads': None, 'shelve.open': None, 'yaml.unsafe_load': None,
    'yaml.full_load': None, 'torch.load': ('weights_only', True), 'np.load': ('allow_pickle', False), 'numpy.load': ('allow_pickle', False),
    'yaml.load': ('Loader', '_loader'),
}

def _dotted(node) -> str:
    return f"{_dotted(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ''

def unsafe_reads(source: str) -> list:
    "(line, call) for every call that can unpickle (or construct arbitrary objects) without the argument that makes it safe."
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(_dotted(b) == 'pickle.Unpickler' for b in node.bases):
            if node.name != '_CifarUnpickler': out.append((node.lineno, f"class {node.name}(pickle.Unpickler)"))
        if not isinstance(node, ast.Call) or (name := _dotted(node.func)) not in UNSAFE: continue
        rule = UNSAFE[name]
        kw = {k.arg: k.value for k in node.keywords}
        ok = rule is not None and rule[0] in kw and (
            isinstance(kw[rule[0]], ast.Constant) and kw[rule[0]].value is rule[1] if not isinstance(rule[1], str)
            else isinstance(kw[rule[0]], ast.Call) and _dotted(kw[rule[0]].func) == rule[1])
        if not ok: out.append((node.lineno, ast.unparse(node)[:120]))
    return out

PACKAGE_MODULES = sorted(p.stem for p in (ROOT / 'modelplay').glob('*.py') if p.stem != '_modidx')

def test_limits_every_module_is_checked():
    assert {'bench', 'checkpoint', 'data', 'spec', 'train'} <= set(PACKAGE_MODULES), PACKAGE_MODULES

@pytest.mark.parametrize('module', PACKAGE_MODULES)
def test_limits_nothing_unpickles_unsafely(module):
    assert unsafe_reads((ROOT / 'modelplay' / f"{module}.py").read_text()) == []

def test_limits_the_safe_readers_are_safe(tmp_path):
    "The two allowed readers: the spec's YAML loader builds no Python objects, and the CIFAR unpickler admits no callable."
    import yaml
    from modelplay.spec import _loader
    assert issubclass(_loader(), yaml.SafeLoader)
    assert [l for l, c in unsafe_reads("class _CifarUnpickler(pickle.Unpickler): pass\nclass X(pickle.Unpickler): pass")] == [2]
    assert [l for l, c in unsafe_reads("torch.load(p, weights_only=False)\ntorch.load(p)\ntorch.load(p, weights_only=True)")] == [1, 2]
    (tmp_path / 'batch').write_bytes(pickle.dumps({b'data': Marker(tmp_path / 'pwned')}, protocol=2))
    with pytest.raises(DataError, match='refused to unpickle'): D.read_cifar_pickle(tmp_path / 'batch')
    no_loss(not (tmp_path / 'pwned').exists(), 'unpickling ran a command')

ESCAPES = ['../../escape', '/abs_escape', 'a/b/c', '..', '.', '~/home_escape', 'C:\\win\\escape']

@pytest.fixture(scope='module')
def trained_names(tmp_path_factory):
    "`modelplay train` once for every escaping name (one process, synthetic data, one step); the work folder of each."
    base = tmp_path_factory.mktemp('escapes')
    out = {}
    for i, name in enumerate(ESCAPES):
        work = base / f"w{i}" / 'a' / 'b' / 'work'; work.mkdir(parents=True)
        spec = work / 'spec.yaml'
        spec.write_text(mp.save_spec({**TINY, 'name': name.replace('/abs_escape', str(base / f"w{i}" / 'abs_escape'))}))
        cwd = os.getcwd()
        os.chdir(work)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                code = main(['train', 'spec.yaml', '--data', 'synthetic', '--steps', '1', '--batch-size', '32', '-q'])
        finally: os.chdir(cwd)
        out[name] = (code, base / f"w{i}", work, err.getvalue())
    return out

@pytest.mark.parametrize('name', ESCAPES)
def test_limits_train_writes_only_in_its_run_folder(name, trained_names):
    code, top, work, err = trained_names[name]
    assert code == 0, err
    made = sorted(p.relative_to(top).as_posix() for p in top.rglob('*') if p.is_file())
    runs = {Path(m).parts[:5] for m in made if m != 'a/b/work/spec.yaml'}
    no_loss(len(runs) == 1 and all(r[:4] == ('a', 'b', 'work', 'runs') for r in runs), f"files written outside runs/<one folder>/: {made}")
    (run,) = runs
    assert sorted(Path(m).name for m in made if m != 'a/b/work/spec.yaml') == sorted(['model.safetensors', 'spec.yaml', 'history.csv', 'steps.csv', 'history.json'])
    assert not run[4].startswith('.') and '/' not in run[4] and '..' != run[4]

@pytest.mark.parametrize('name', ['../../escape', '/abs_escape', 'a/b', '..', ''])
def test_limits_widget_default_save_path_stays_in_configs(name, tmp_path, monkeypatch):
    "The default file of *Save config* is named after the spec; whatever the name, it lands in configs/custom/."
    pytest.importorskip('ipywidgets')
    from modelplay.widgets import BuilderPanel
    configs = tmp_path / 'x' / 'configs'; configs.mkdir(parents=True)
    monkeypatch.setenv('MODELPLAY_CONFIGS', str(configs))
    name = name.replace('/abs_escape', str(tmp_path / 'abs_escape'))   # an absolute name that, followed, still lands in tmp_path
    p = BuilderPanel({**TINY, 'name': name})
    try:
        path = p.save()
        assert path is not None, html_text(p.message.value)
        no_loss(path.resolve().parent == (configs / 'custom').resolve(), f"the default save path left configs/custom: {path}")
        no_loss(sorted(q.relative_to(tmp_path).as_posix() for q in tmp_path.rglob('*') if q.is_file()) == [f"x/configs/custom/{path.name}"],
                f"saved outside configs/custom: {path}")
    finally: p.close()

def _member(name, kind=tarfile.REGTYPE, target=''):
    info = tarfile.TarInfo(name); info.type = kind; info.linkname = target
    data = b'x' if kind == tarfile.REGTYPE else None
    info.size = len(data or b'')
    return info, data

ARCHIVE_MEMBERS = {   # id → the extra member a tampered tarball holds
    'dot-dot': ('../escape.txt',), 'deep-dot-dot': ('cifar-10-batches-bin/../../escape.txt',),
    'absolute': ('{tmp}/escape.txt',), 'other-top-folder': ('elsewhere/escape.txt',),
    'symlink-out': ('cifar-10-batches-bin/link', tarfile.SYMTYPE, '../../escape.txt'),
    'hardlink-out': ('cifar-10-batches-bin/hard', tarfile.LNKTYPE, '/etc/passwd'),
    'device': ('cifar-10-batches-bin/dev', tarfile.CHRTYPE),
}

@pytest.mark.parametrize('case', list(ARCHIVE_MEMBERS))
def test_limits_archive_members_stay_in_their_folder(case, tmp_path):
    good = write_cifar(tmp_path / 'src')
    folder = tmp_path / 'data' / 'cifar10'; folder.mkdir(parents=True)
    _tarball(folder / 'cifar-10-binary.tar.gz', good, 'cifar-10-batches-bin', extra=[_member(ARCHIVE_MEMBERS[case][0].format(tmp=tmp_path), *ARCHIVE_MEMBERS[case][1:])])
    with pytest.raises(DataError) as e: load_data('cifar10', root=tmp_path / 'data', download=False)
    assert 'refusing to unpack it' in str(e.value), str(e.value)
    no_loss(sorted(os.listdir(folder)) == ['cifar-10-binary.tar.gz'] and not (tmp_path / 'data' / 'escape.txt').exists()
            and not (tmp_path / 'escape.txt').exists(), 'an archive member was written')


# ---- training faults: a run that goes wrong stops at a step boundary with a clear reason, keeping the model and history ----
def _synthetic():
    return mp.synthetic(n=256, shape=(1, 8, 8), classes=4, seed=0)

def _finite(model) -> bool:
    return all(torch.isfinite(v.float()).all() for v in model.state_dict().values())

def test_train_loss_blows_up():
    "A learning rate that makes the loss non-finite: the run stops there; the weights are the last finite ones."
    model = mp.build(TINY, seed=0)
    h = mp.fit(model, _synthetic(), steps=20, lr=1e30, optimizer='sgd', progress=False)
    assert h.stopped_early and ('loss became' in h.reason or 'non-finite' in h.reason), h.reason
    assert _finite(model) and len(h.steps) < 20

def test_train_nan_in_the_data():
    "A NaN pixel in one batch: the run stops at that step with what was learnt before it."
    ds = _synthetic()
    ds.train.x = ds.train.x.float(); ds.train.x[5:] = float('nan')
    model = mp.build(TINY, seed=0)
    h = mp.fit(model, ds, steps=10, batch_size=4, progress=False, eval=False, seed=0)
    assert h.stopped_early and len(h.steps) < 10 and _finite(model), h.reason

def test_train_out_of_memory():
    "Out of memory at step 3: stopped with the batch size that failed and a smaller one to try; history and model kept."
    model, calls = mp.build(TINY, seed=0), [0]
    real = model.forward
    def third_fails(*a, **k):
        calls[0] += 1
        if calls[0] == 3: raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return real(*a, **k)
    model.forward = third_fails
    h = mp.fit(model, _synthetic(), steps=6, batch_size=32, progress=False, eval=False)
    assert h.stopped_early and 'batch_size=32' in h.reason and 'batch_size=16' in h.reason, h.reason
    assert len(h.steps) == 2 and _finite(model)

def test_train_ctrl_c():
    "Ctrl-C (SIGINT) during step 4: the run ends at the step boundary; the steps done are in the history."
    import signal
    class Interrupt(mp.Callback):
        def on_step_end(self, run):
            if len(run.history.steps) == 4: signal.raise_signal(signal.SIGINT)
    model = mp.build(TINY, seed=0)
    h = mp.fit(model, _synthetic(), steps=50, progress=False, eval=False, callbacks=[Interrupt()])
    assert h.reason.startswith('interrupted') and 4 <= len(h.steps) < 50 and _finite(model), h.reason

@pytest.mark.parametrize('kw, words', [
    ({'lr': -1.0}, 'lr'), ({'optimizer': 'adamm'}, "did you mean 'adam'"), ({'batch_size': 0}, 'batch_size'),
    ({'budget': 'soon'}, "budget"), ({'schedule': 'cosin'}, "did you mean 'cosine'")])
def test_train_bad_recipe(kw, words):
    "A recipe value that cannot be used is refused before any step, naming the key."
    with pytest.raises(SpecError, match=re.escape(words)):
        mp.fit(mp.build(TINY, seed=0), _synthetic(), steps=2, progress=False, **kw)

def test_train_data_that_does_not_fit():
    "A model sized for 8x8 images given 28x28 ones: a clear error before training, naming both shapes."
    ds = mp.synthetic(n=32, shape=(1, 28, 28), classes=4)
    with pytest.raises(mp.ModelplayError, match=r'\[1, 8, 8\]|1, 8, 8'):
        mp.fit(mp.build(TINY, seed=0), ds, steps=1, progress=False)
