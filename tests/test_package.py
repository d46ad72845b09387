"Package hygiene: the package imports without the notebooks, is what nbdev-export makes of them, and has no orphans."
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG, NBS = ROOT / 'modelplay', ROOT / 'nbs'

def _exports():
    "notebook → default_exp of every notebook that exports."
    out = {}
    for nb in sorted(NBS.rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts: continue
        for cell in json.loads(nb.read_text())['cells']:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(cell['source']), re.M)
            if m: out[nb] = m.group(1); break
    return out

def test_import_is_light(tmp_path):
    "Importing the package pulls in no notebook tooling and none of the heavy optional libraries."
    code = ("import sys, modelplay as mp; heavy = [m for m in ('fastcore', 'nbdev', 'matplotlib', 'ipywidgets', 'torchinfo', 'yaml')"
            " if m in sys.modules]; print(','.join(heavy))")
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '', f"imported at `import modelplay`: {r.stdout}"

def test_every_notebook_module_exists_once():
    exports = _exports()
    mods = list(exports.values())
    assert len(mods) == len(set(mods)), f"two notebooks export the same module: {exports}"
    for nb, mod in exports.items():
        assert (PKG / (mod.replace('.', '/') + '.py')).exists(), f"{nb.name} exports {mod}, which is missing: run nbdev-export"

def test_no_orphan_modules():
    for f in PKG.rglob('*.py'):
        m = re.search(r'File to edit: \.\./(nbs/.*?\.ipynb)', f.read_text())
        if f.name == '_modidx.py': continue
        assert m, f"{f.relative_to(ROOT)} was not made by nbdev-export (edit the notebooks, not the package)"
        assert (ROOT / m.group(1)).exists(), f"orphan module {f.relative_to(ROOT)}: its notebook {m.group(1)} is gone"

def test_export_in_sync(tmp_path):
    "Running nbdev-export on a copy changes nothing in modelplay/."
    exe = shutil.which('nbdev-export') or str(Path(sys.executable).parent / 'nbdev-export')
    if not Path(exe).exists(): pytest.skip('nbdev not installed')
    for name in ('nbs', 'modelplay'): shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    r = subprocess.run([exe], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for f in sorted((tmp_path / 'modelplay').rglob('*.py')):
        rel = f.relative_to(tmp_path)
        assert (ROOT / rel).exists(), f"nbdev-export makes {rel}, which is not in the repo"
        assert f.read_text() == (ROOT / rel).read_text(), f"{rel} differs from what nbdev-export makes of the notebooks"

def test_readme_in_sync():
    r = subprocess.run([sys.executable, str(ROOT / '.ci' / 'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_commands_are_what_ci_runs():
    "The README's test command is the one .ci/run runs."
    readme, ci = (ROOT / 'README.md').read_text(), (ROOT / '.ci' / 'run').read_text()
    cmds = re.findall(r'```bash\n(.*?)\n```', readme, re.S)
    assert len(cmds) == 2, f"README must give exactly two set-up commands, found {len(cmds)}"
    assert all('pip install torch==2.13.0' in c for c in cmds), "keep the exact torch pin in both commands"
    assert cmds[1] in ci, ".ci/run must run the README's test command verbatim"
