"Logic tests of the widget panels without a browser: set widget values, click buttons, check spec, stats, YAML and errors."
import copy, html, time
from typing import Annotated

import pytest
import torch
from torch import nn

pytest.importorskip('ipywidgets')
import modelplay as mp
from modelplay.registry import MIXERS, HEADS, Range
from modelplay.spec import load_spec, load_raw
from modelplay.zoo import forward_flops
from modelplay.widgets import (BuilderPanel, SummaryPanel, TrainPanel, BenchPanel, Playground, Workspace, spec_stats,
                               count_flops, fingerprint, css_class)
from modelplay.fields import _FLOPS


def params_of(spec):
    return sum(p.numel() for p in mp.build(spec, device='meta').parameters())


@pytest.fixture
def panel():
    p = BuilderPanel('mnist/vit_38k')
    yield p
    p.close()


# --- statistics on the meta device

@pytest.mark.parametrize('name', ['mnist/cnn_8k', 'mnist/mh_cnn_422k', 'cifar10/efficientnet_66k', 'cifar10/convnext_18k',
                                  'text/llama_char', 'lm/hetero_example', 'imagenet/resnet18'])
def test_stats_match_the_package(name):
    s, model = spec_stats(name), mp.build(name, device='meta')
    assert s.params == sum(p.numel() for p in model.parameters())
    assert s.flops == forward_flops(model)
    assert sum(v['params'] for v in s.by_part.values()) == s.params


def test_cached_parts_count_the_same_as_a_fresh_count():
    "Counting again from the cache, and counting a changed spec that shares parts, agree with an uncached count."
    raw = load_raw('mnist/vit_38k')[0]
    spec_stats(raw)
    raw['stages'][0]['layer']['mixer']['heads'] = 8
    cached = spec_stats(raw)
    _FLOPS.clear()
    assert spec_stats(raw).flops == cached.flops == forward_flops(mp.build(raw, device='meta'))


def test_count_flops_leaves_the_model_as_it_was():
    m = mp.build('mnist/vit_38k', device='meta')
    count_flops(m)
    assert all('forward' not in mod.__dict__ for mod in m.modules())
    assert m.training


def test_fingerprint_sees_attributes_that_change_the_forward():
    a = mp.build({'input': {'shape': [8]}, 'task': 'classify', 'stem': {'type': 'flatten', 'project': True}, 'dim': 8,
                  'stages': [], 'heads': {'label': {'type': 'linear', 'classes': 3}}}, device='meta')
    b = copy.deepcopy(a); b.heads.label.fc.in_features = 9
    assert fingerprint(a.heads.label) != fingerprint(b.heads.label)


# --- the builder panel

def test_preset_loads_with_resolved_values(panel):
    assert panel.stats.params == 37_770
    assert panel.field('stem.pos').input.value == 'learned'
    assert panel.field('stages[0].layer.mixer.window').toggle.value is False        # None: unticked
    assert load_spec(panel.yaml.value) == load_spec('mnist/vit_38k')
    assert panel.workspace.stats is panel.stats


def test_edit_updates_spec_stats_and_yaml(panel):
    panel.field('stages[0].depth').input.value = 6
    assert panel.spec['stages'][0]['depth'] == 6
    assert panel.stats.params == params_of(panel.spec)
    assert 'depth: 6' in panel.yaml.value
    assert f"{panel.stats.params:,}" in panel.stats_html.value
    panel.field('dim').input.value = 48
    assert panel.stats.params == params_of(panel.spec) and panel.spec['dim'] == 48


def test_optional_toggle_writes_null_and_value(panel):
    row = panel.field('stages[0].layer.mixer.kv_heads')
    row.toggle.value = True; row.input.value = 2
    assert panel.spec['stages'][0]['layer']['mixer']['kv_heads'] == 2
    assert panel.stats.params == params_of(panel.spec) < 37_770
    row.toggle.value = False
    assert panel.spec['stages'][0]['layer']['mixer']['kv_heads'] is None and panel.stats.params == 37_770


def test_component_change_keeps_shared_fields_and_shows_the_new_form(panel):
    panel.field('stages[0].layer.norm').dropdown.value = 'rms'
    assert panel.spec['stages'][0]['layer']['norm'] == 'rms'
    assert panel.field('stages[0].layer.norm.eps').input.value == mp.NORMS.describe('rms').field('eps').default
    assert panel.stats.params == params_of(panel.spec)


def test_per_layer_switch_and_layer_edit(panel):
    panel.field('stages[0]').mode.value = 'per layer'
    layers = panel.spec['stages'][0]['layers']
    assert len(layers) == 4 and 'layer' not in panel.spec['stages'][0]
    panel.field('stages[0].layers[2].mlp.ratio').input.value = 1.0
    assert [l['mlp']['ratio'] for l in panel.spec['stages'][0]['layers']] == [2.0, 2.0, 1.0, 2.0]
    assert panel.stats.params == params_of(panel.spec)
    panel.field('stages[0].depth').input.value = 5               # per layer: the last layer is copied
    assert len(panel.spec['stages'][0]['layers']) == 5 and panel.stats.params == params_of(panel.spec)
    panel.field('stages[0]').mode.value = 'same for every layer'
    assert panel.spec['stages'][0]['depth'] == 5 and 'layers' not in panel.spec['stages'][0]


def test_stage_buttons(panel):
    stage = lambda: panel.field('stages[0]').box.children[0].children   # title, ↑, ↓, ⧉, ✕, error
    stage()[3].click()                                                 # duplicate
    assert len(panel.spec['stages']) == 2 and panel.stats.params == params_of(panel.spec)
    panel.field('stages[1].depth').input.value = 1
    panel.field('stages[1]').box.children[0].children[1].click()       # move stage 1 up
    assert [s['depth'] for s in panel.spec['stages']] == [1, 4]
    stage()[4].click()                                                 # remove stage 0
    assert [s['depth'] for s in panel.spec['stages']] == [4]
    panel.add_stage()
    assert len(panel.spec['stages']) == 2 and not panel.errors


def test_bad_value_shows_inline_error_and_keeps_last_stats(panel):
    good = panel.stats
    panel.field('stages[0].layer.mixer.heads').input.value = 5
    assert [p for p, _ in panel.errors] == ['stages[0].layer.mixer.heads']
    assert 'must divide' in panel.field('stages[0].layer.mixer.heads').error.value
    assert panel.stats is good and 'opacity:0.45' in panel.stats_html.value
    assert '1 problem' in panel.problems.value
    panel.field('stages[0].layer.mixer.dropout').input.value = 2.0   # out of its bounds: refused by validation, not clamped
    assert 'stages[0].layer.mixer.dropout' in [p for p, _ in panel.errors]
    assert panel.spec['stages'][0]['layer']['mixer']['dropout'] == 2.0
    panel.field('stages[0].layer.mixer.heads').input.value = 4
    panel.field('stages[0].layer.mixer.dropout').input.value = 0.0
    assert panel.errors == [] and panel.field('stages[0].layer.mixer.heads').error.value == ''
    assert panel.problems.value == ''


def test_yaml_pane_updates_the_panel(panel):
    raw = load_raw('mnist/vit_38k')[0]
    raw['stages'][0]['depth'] = 2
    panel.yaml.value = mp.save_spec(raw)
    assert panel.spec['stages'][0]['depth'] == 2 and panel.field('stages[0].depth').input.value == 2
    assert panel.stats.params == params_of(raw)
    panel.yaml.value = 'stages: [unclosed'
    assert 'YAML' in panel.message.value and panel.spec['stages'][0]['depth'] == 2
    raw['stages'][0]['layer']['mixer'] = {'type': 'mhaa', 'heads': 4}
    panel.load_yaml(mp.save_spec(raw))
    ed = panel.field('stages[0].layer.mixer')
    assert ed.dropdown.value == 'mhaa' and "did you mean 'mha'" in html.unescape(ed.error.value)
    raw['stages'][0]['layer']['mixer']['heads'] = '4'                 # a wrong type stays visible as YAML text
    panel.load_yaml(mp.save_spec(raw).replace('mhaa', 'mha'))
    row = panel.field('stages[0].layer.mixer.heads')
    assert row.kind == 'yaml' and 'must be an integer' in row.error.value
    row.input.value = '4'
    assert panel.errors == [] and panel.spec['stages'][0]['layer']['mixer']['heads'] == 4


def test_save_config_reads_back_to_the_same_model(panel, tmp_path):
    panel.field('stages[0].layer.mixer.rope').input.value = '1d'
    path = panel.save(tmp_path / 'mine.yaml')
    assert load_spec(path) == panel.stats.spec
    assert 'loads back to the same model' in panel.message.value
    a, b = mp.build(path, seed=0), mp.build(panel.spec, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_input_preset_sets_input_and_classes(panel):
    panel.field('input').input.value = 'cifar100'
    assert panel.spec['input'] == {'shape': [3, 32, 32]} and panel.spec['heads']['label']['classes'] == 100
    assert panel.stats.params == params_of(panel.spec) and panel.workspace.data == 'cifar100'
    panel.field('input').input.value = 'tinyshakespeare'
    assert panel.spec['task'] == 'causal_lm' and panel.stats.params == params_of('text/gpt_char')


def test_heads_add_remove(panel):
    panel.add_head('parity')
    assert set(panel.spec['heads']) == {'label', 'parity'} and panel.stats.params == params_of(panel.spec)
    panel.field('heads.parity.classes').input.value = 2
    assert panel.stats.by_part['heads.parity']['params'] == 32 * 2 + 2
    panel.remove_head('parity')
    assert list(panel.spec['heads']) == ['label'] and panel.stats.params == 37_770


def test_registration_after_display_appears_with_its_form(panel):
    panel.set_per_layer(0)
    try:
        @MIXERS.register('late_mixer')
        class LateMixer(nn.Module):
            "A mixer defined after the panel."
            def __init__(self, dim: int, width: Annotated[int, Range(1)] = 3, gate: bool = True):
                super().__init__(); self.proj = nn.Linear(dim, dim * width // 3, bias=gate)
            def forward(self, x): return x
        eds = [panel.field(f"stages[0].layers[{j}].mixer") for j in range(4)]
        assert all('late_mixer' in e.choices for e in eds)
        eds[1].dropdown.value = 'late_mixer'
        assert panel.field('stages[0].layers[1].mixer.width').input.value == 3
        assert panel.stats.params == params_of(panel.spec)
        panel.field('stages[0].layers[1].mixer.gate').input.value = False
        assert panel.spec['stages'][0]['layers'][1]['mixer'] == {'type': 'late_mixer', 'gate': False}

        @MIXERS.register('late_mixer')                                 # the cell run again with a new signature
        class LateMixer(nn.Module):
            "A mixer defined after the panel, second version."
            def __init__(self, dim: int, width: Annotated[int, Range(1)] = 3, gate: bool = True, scale: float = 1.0):
                super().__init__(); self.proj = nn.Linear(dim, dim * width // 3, bias=gate)
            def forward(self, x): return x
        assert panel.field('stages[0].layers[1].mixer.scale').input.value == 1.0
    finally:
        MIXERS.unregister('late_mixer')
    assert [p for p, _ in panel.errors] == ['stages[0].layers[1].mixer.type']
    n = len(MIXERS._listeners)
    panel.close()
    assert len(MIXERS._listeners) == n - 1


# --- summary, training, bench, playground

TINY = {'name': 'tiny', 'input': {'shape': [1, 8, 8]}, 'stem': {'type': 'flatten', 'project': True}, 'dim': 16,
        'stages': [{'depth': 1, 'layer': {'block': 'mlp'}}], 'heads': {'label': {'type': 'linear', 'classes': 4}}}


def test_summary_and_compare():
    sp = SummaryPanel('mnist/vit_38k')
    assert sp.result.params == 37_770 and 'stages.0' in sp.html.value
    sp.compare('mnist/cnn_8k')
    assert 'mnist/cnn_8k' in sp.compare_html.value and '7,851' in sp.compare_html.value
    sp.compare('mnist/no_such')
    assert 'no preset' in sp.compare_html.value


def test_train_start_stop_keeps_model_and_history(tmp_path):
    tp = TrainPanel(workspace=Workspace(TINY))
    tp.data.value, tp.epochs.value, tp.batch.value = 'synthetic', 100.0, 16
    tp.start_button.click()
    assert tp.stop_button.disabled is False and tp.start_button.disabled is True
    t0 = time.time()
    while tp.running and (tp.run is None or tp.run.step < 5) and time.time() - t0 < 60: time.sleep(0.02)
    tp.stop_button.click()
    assert tp.wait(60)
    assert tp.history.stopped_early and tp.history.reason == 'stopped by the user'
    assert 5 <= len(tp.history.steps) < 100 * 512 // 16
    assert 'acc' in tp.metrics and 'stopped by the user' in tp.status_html.value
    assert tp.plot.value[:4] == b'\x89PNG'
    assert tp.workspace.model is tp.model and tp.workspace.trained
    assert tp.save_button.disabled is False
    path = tp.save(tmp_path / 'tiny.safetensors')
    assert mp.load_checkpoint(path).spec == tp.model.spec


def test_train_budget_runs_to_the_end():
    tp = TrainPanel(workspace=Workspace(TINY))
    tp.data.value, tp.until.value, tp.budget.value, tp.batch.value = 'synthetic', 'budget', '1s', 64
    tp.start(); assert tp.wait(60)
    assert tp.history.reason == '' and len(tp.history.steps) > 0 and 'done' in tp.status_html.value


def test_train_refuses_an_invalid_spec():
    ws = Workspace(dict(TINY, dim=0))
    tp = TrainPanel(workspace=ws)
    tp.start()
    assert tp.thread is None and 'problem' in tp.status_html.value


def test_bench_panel_with_a_stand_in(tmp_path):
    from modelplay.bench import BenchTable
    calls = []
    def fake(items, data=None, budget=None, progress=True):
        calls.append((items, data, budget, progress))
        return BenchTable([{'name': 'a', 'params': 10, 'acc': 0.5}, {'name': 'b', 'params': 100, 'acc': 0.9}], {})
    bp = BenchPanel(workspace=Workspace('mnist/cnn_8k'), bench=fake)
    assert all(n.startswith('mnist/') for n in bp.presets.options)
    bp.presets.value = ('mnist/cnn_8k',)
    bp.run(wait=True)
    items, data, budget, progress = calls[0]
    assert items[0] == 'mnist/cnn_8k' and items[1]['name'] == 'cnn_8k' and (data, budget, progress) == ('mnist', '10s', False)
    assert '<table' in bp.table.value and bp.plot.value[:4] == b'\x89PNG'
    bp.folder.value = str(tmp_path)
    assert bp.export('csv').read_text().startswith('name,params,acc')
    assert '| a' in bp.export('md').read_text()
    bp.data.value = 'cifar10'
    assert all(n.startswith('cifar10/') for n in bp.presets.options)


def test_playground_shares_one_workspace():
    pg = Playground('mnist/cnn_8k')
    try:
        assert pg.tabs.titles == ('Build', 'Summary', 'Train', 'Bench')
        pg.builder.field('stages[1].dim').input.value = 8
        pg.tabs.selected_index = 1
        assert pg.summary.result.params == pg.builder.stats.params == params_of(pg.builder.spec)
        pg.builder.load('cifar10/cnn_8k')
        assert pg.train.data.value == 'cifar10' and pg.summary.stale
        pg.tabs.selected_index = 3
        assert pg.bench.data.value == 'cifar10'
    finally:
        pg.close()


def test_css_classes_name_spec_paths():
    assert css_class(('stages', 0, 'layers', 2, 'mixer')) == 'mp-stages-0-layers-2-mixer'
    assert css_class('heads.label.classes') == 'mp-heads-label-classes'


def test_form_drawn_while_invalid_is_redrawn_once_valid():
    "A form rebuilt while the spec has errors shows declared defaults where the spec's own defaults apply; it is redrawn when valid."
    p = BuilderPanel('text/gpt_char')                                  # model-level `dropout: 0.1` applies to every component
    try:
        assert p.field('stages[0].layer.mixer.dropout').input.value == 0.1
        p.field('stages[0].layer.mixer.heads').input.value = 5
        p.add_stage()
        assert p.errors and p.field('stages[1].layer.mixer.dropout').input.value == 0.0
        p.field('stages[0].layer.mixer.heads').input.value = 4             # the copy in stage 1 still has heads=5
        assert [e for e, _ in p.errors] == ['stages[1].layer.mixer.heads']
        p.field('stages[1].layer.mixer.heads').input.value = 4
        assert not p.errors and p.field('stages[1].layer.mixer.dropout').input.value == 0.1
    finally:
        p.close()
