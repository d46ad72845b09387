"A private JupyterLab server and a headless Chromium for the browser tests (see the recipe in shared/BROWSER_TESTS.md)."
import contextlib, json, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get('MODELPLAY_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
                 '--no-default-browser-check', '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-default-apps', '--disable-extensions', '--metrics-recording-only', '--password-store=basic',
                 '--use-mock-keychain']


def _missing() -> str | None:
    "Why the browser tests cannot run here, or None."
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "playwright is not installed (pip install playwright==1.65.2; the browser is Debian's chromium)"
    try: import jupyterlab, ipywidgets  # noqa: F401
    except ImportError as e: return f"{e.name} is not installed (pip install jupyterlab==4.6.6 ipywidgets==8.1.9)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set MODELPLAY_CHROMIUM)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _missing()
    for item in items:
        if 'browser' in item.keywords and why: item.add_marker(pytest.mark.skip(reason=f"browser test skipped: {why}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url, timeout=2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r: return r.status
    except Exception: return 0


@pytest.fixture(scope='module')
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('browser-artifacts')


@contextlib.contextmanager
def _server(app: str, tmp: Path, artifacts: Path, extra=()):
    "A Jupyter server (`python -m jupyterlab` or `python -m notebook`) on a free port serving a temporary folder."
    import psutil
    root, home = tmp / 'root', tmp / 'home'
    settings = home / 'settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True); root.mkdir()
    (settings / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False, 'doNotDisturbMode': True}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / 'config'), JUPYTER_DATA_DIR=str(home / 'data'),
               JUPYTER_RUNTIME_DIR=str(home / 'runtime'), IPYTHONDIR=str(home / 'ipython'), JUPYTER_PLATFORM_DIRS='1',
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MODELPLAY_CONFIGS=str(ROOT / 'configs'), PYTHONPATH=str(ROOT))
    port = _free_port()
    log = open(artifacts / f'{app}.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', app, '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1',
                             f'--ServerApp.port={port}', '--ServerApp.port_retries=0', '--IdentityProvider.token=',
                             '--ServerApp.password=', '--ServerApp.disable_check_xsrf=True', f'--ServerApp.root_dir={root}',
                             *[a.format(home=home) for a in extra]], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while not (_get(f"{base}/api/status") == 200 and _get(f"{base}/{'lab' if app == 'jupyterlab' else 'tree'}", 10) == 200):
            if proc.poll() is not None or time.time() - t0 > 120:
                log.flush()
                pytest.fail(f"{app} did not start:\n{(artifacts / f'{app}.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, root
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(10)
        for c in children:                      # kernels the server started: they must be gone too
            try: c.wait(10)
            except psutil.TimeoutExpired: c.kill()
            except psutil.NoSuchProcess: pass
        log.close()


@pytest.fixture(scope='module')
def lab(tmp_path_factory, artifacts):
    "JupyterLab: yields (base url, the folder it serves)."
    with _server('jupyterlab', tmp_path_factory.mktemp('lab'), artifacts,
                 ['--LabApp.user_settings_dir={home}/settings', '--LabApp.workspaces_dir={home}/workspaces', '--LabApp.news_url=None',
                  '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.extension_manager=readonly']) as s:
        yield s


@pytest.fixture(scope='module')
def notebook7(tmp_path_factory, artifacts):
    "Jupyter Notebook 7 (skipped when the `notebook` package is not installed): yields (base url, the folder it serves)."
    pytest.importorskip('notebook', reason='Jupyter Notebook 7 is not installed (pip install notebook==7.6.5)')
    with _server('notebook', tmp_path_factory.mktemp('nb7'), artifacts,
                 ['--JupyterNotebookApp.user_settings_dir={home}/settings', '--JupyterNotebookApp.workspaces_dir={home}/workspaces']) as s:
        yield s


@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, artifacts, request):
    "A page of 1400×1000; its console goes to the artifacts; a screenshot is kept when the test fails."
    ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
    pg = ctx.new_page()
    console = open(artifacts / f"{request.node.name}-console.log", 'w')
    pg.on('console', lambda m: console.write(f"{m.type}: {m.text}\n"))
    yield pg
    if getattr(request.node, 'rep_call', None) is not None and request.node.rep_call.failed:
        pg.screenshot(path=str(artifacts / f"{request.node.name}-failed.png"), full_page=True)
    console.close(); ctx.close()


def _tail(path: Path, n: int, keep=lambda line: True) -> str:
    try: lines = [l for l in path.read_text(errors='replace').splitlines() if keep(l)]
    except OSError as e: return f"({e})"
    return '\n'.join(l[:300] for l in lines[-n:])


def _diagnostics(item) -> str:
    "What the page and the server said, for the report of a failed browser test (the artifacts folder may not outlive the run)."
    art, page = item.funcargs.get('artifacts'), item.funcargs.get('page')
    out = []
    if page is not None:
        try: text = page.locator('.mp-playground').first.inner_text(timeout=2_000)
        except Exception as e: text = f"(no playground on the page: {type(e).__name__})"
        out += ['-- the playground widget as the page shows it (start):', text[:1500]]
        try: outputs = page.locator('.jp-Notebook .jp-CodeCell').first.locator('.jp-OutputArea').inner_text(timeout=2_000)
        except Exception as e: outputs = f"({type(e).__name__})"
        out += ['-- the first cell\'s output area (start):', outputs[:600]]
    if art is not None:
        out += ['-- browser console, errors and warnings (last 30):',
                _tail(art / f"{item.name}-console.log", 30, lambda l: l.startswith(('error', 'warning')))]
        for log in sorted(art.glob('*.log')):
            if not log.name.endswith('-console.log'): out += [f'-- {log.name} (last 30 lines):', _tail(log, 30)]
    return '\n'.join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    setattr(item, f"rep_{rep.when}", rep)
    if rep.when == 'call' and rep.failed and 'page' in getattr(item, 'funcargs', {}):
        try: rep.sections.append(('browser diagnostics', _diagnostics(item)))
        except Exception as e: rep.sections.append(('browser diagnostics', f"could not be gathered: {e!r}"))
