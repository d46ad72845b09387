"""Write README.md from nbs/index.ipynb (markdown as is, code in fences, `#| hide` cells left out).

    python .ci/readme.py          # write README.md
    python .ci/readme.py --check  # exit 1 when README.md differs from what the notebook gives
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    parts = []
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        lines = src.splitlines()
        directives = [l[3:].strip() for l in lines if l.startswith('#| ')]
        body = '\n'.join(l for l in lines if not l.startswith('#| ')).strip('\n')
        if any(d.split()[0] in ('hide', 'default_exp') for d in directives if d) or not body.strip(): continue
        if cell['cell_type'] == 'markdown': parts.append(body)
        else:
            parts.append(f"```python\n{body}\n```")
            for out in cell.get('outputs', []):
                text = ''.join(out.get('text', '') or out.get('data', {}).get('text/plain', ''))
                if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit("README.md is not what nbs/index.ipynb gives: run `python .ci/readme.py` and commit")
    else: readme.write_text(text, encoding='utf-8')
