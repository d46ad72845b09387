import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tests and benchmarks find real data through MODELPLAY_DATA; default to the shared data sets beside the repo
_shared = ROOT.parent / 'shared' / 'datasets'
if 'MODELPLAY_DATA' not in os.environ and _shared.is_dir():
    os.environ['MODELPLAY_DATA'] = str(_shared)

try:
    from hypothesis import settings as _hs, HealthCheck as _HC
    _hs.register_profile('ci', derandomize=True, deadline=None, suppress_health_check=[_HC.too_slow])
    _hs.register_profile('dev', deadline=None, suppress_health_check=[_HC.too_slow])
    _hs.load_profile('ci' if os.environ.get('CI') else os.environ.get('HYPOTHESIS_PROFILE', 'dev'))
except ImportError: pass

import pytest

@pytest.fixture
def one_thread():
    "Tiny models: one intra-op thread is faster than two fighting over shared cores."
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
