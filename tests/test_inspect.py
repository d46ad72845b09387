"""Inspection across the presets: summary on every family, FLOPs on the meta device equal to a real run, the default
no-decay groups partition every parameter, metadata that describes each preset, and replaced models that still train."""
import re, tempfile
from pathlib import Path
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
import modelplay as mp
from modelplay.inspect import summary, count_params, flops, compare, fmap, replace, structure, group_patterns, meta_copy
from modelplay.filters import ParamFilter, explain, param_groups, default_param_groups, DEFAULT_GROUP_RULES, freeze, unfreeze
from modelplay.spec import SpecError
from modelplay.layers import GRN

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.relative_to(ROOT / 'configs').with_suffix('').as_posix() for p in (ROOT / 'configs').rglob('*.yaml'))

MULTI = {'name': 'two_heads', 'input': {'shape': [1, 16, 16], 'aux': 3}, 'dim': 16,
         'stem': {'type': 'conv', 'kernel_size': 3, 'stride': 2, 'channels': [8]},
         'stages': [{'depth': 1, 'layer': {'block': 'convnext'}},
                    {'dim': 32, 'depth': 1, 'downsample': {'type': 'conv'},
                     'layer': {'block': 'sequential', 'mixer': {'type': 'mha', 'heads': 2}, 'mlp': 'glu'}}],
         'pool': 'mean', 'heads': {'digit': {'type': 'linear', 'classes': 10}, 'size': {'type': 'mlp', 'hidden': 8, 'classes': 1}},
         'loss': {'digit': 'cross_entropy', 'size': 'mse'}}

def names(model): return [n for n, _ in model.named_parameters()]

# --- summary on every family ----------------------------------------------------------------------------------------

def test_summary_classifier_real_device_reduced_input():
    model = mp.build('imagenet/resnet18', ['input.shape=[3,64,64]'], seed=0)
    s = summary(model)
    assert s.params == s.trainable == 11_689_512
    assert s.by_stage['stages.3'] == 8_393_728 and s.output_shapes['stages.3'] == (1, 2, 2, 512)
    assert s.flops_forward == flops(model)['forward'] and s.flops_forward_backward > 2 * s.flops_forward
    assert s.backend is None and 'none (no attention mixers)' in str(s)
    assert 'mult-adds' not in str(s) and 'FLOPs = 2 × multiply-adds' in str(s) and s.activation_bytes > 0
    assert next(model.parameters()).device.type == 'cpu'   # the model itself is left as it was

def test_summary_vit_b16_on_meta():
    s = summary(mp.build('imagenet/vit_b16', device='meta'))
    assert s.params == 86_567_656
    assert abs(s.flops_forward / 2 - 17.56e9) < 0.02e9            # the 17.6 GMACs reported for ViT-B/16
    assert s.input_shape == (1, 3, 224, 224) and s.output_shapes['stages.0'] == (1, 197, 768)
    assert s.backend == 'sdpa' and s.by_group['positions'] == 197 * 768 and s.by_group['tokens'] == 768
    html = s._repr_html_()
    assert html.startswith('<pre>') and '<table>' in html and 'Attention backend' in html

def test_summary_multi_head_with_aux():
    model = mp.build(MULTI, seed=0)
    s = summary(model)
    assert s.input_shape == ((1, 1, 16, 16), (1, 3))
    assert s.output_shapes['heads.digit'] == (1, 10) and s.output_shapes['heads.size'] == (1, 1)
    assert set(s.by_stage) == {'stem', 'stages.0', 'stages.1', 'pool', 'heads.digit', 'heads.size'}
    assert sum(s.by_stage.values()) == s.params == count_params(model)
    out = model(torch.randn(2, 1, 16, 16), aux=torch.randn(2, 3))
    assert s.flops_forward == flops(model, (torch.zeros(1, 1, 16, 16), torch.zeros(1, 3)))['forward']
    assert set(out) == {'digit', 'size'}

def test_summary_lm_small_overrides():
    model = mp.build('lm/gpt2', ['stages.0.depth=2', 'input.seq_len=64', 'input.vocab=1000', 'dim=64',
                                 'stages.0.layer.mixer.heads=4'], seed=0)
    s = summary(model, depth=2)
    assert s.output_shapes['heads.logits'] == (1, 64, 1000)
    assert s.by_stage['heads.logits'] == 0 and s.by_group['embeddings'] == 1000 * 64   # the head is tied to the embedding
    linear = 2 * (64 * 192 + 64 * 64 + 2 * 64 * 256)                                   # per token per layer
    attention = 2 * 2 * 64 * 64 * 64                                                   # q·k and p·v (causal: counted in full)
    assert s.flops_forward == 64 * (2 * linear + 2 * 64 * 1000) + 2 * attention

def test_llama_7b_and_vit_l_on_meta_count_without_weights():
    llama = mp.build('lm/llama_7b', device='meta')
    assert count_params(llama) == 6_738_415_616
    f = flops(llama)
    assert f['forward'] > 2 * 2048 * (6_738_415_616 - 32000 * 4096)      # every weight but the embedding table, per token
    assert 2.5 * f['forward'] < f['forward_backward'] <= 3 * f['forward']
    vit_l = mp.build('imagenet/vit_b16', ['dim=1024', 'stages.0.depth=24', 'stages.0.layer.mixer.heads=16'], device='meta')
    assert count_params(vit_l) == 304_326_632 and abs(flops(vit_l)['forward'] / 2 - 61.6e9) < 0.1e9

# --- FLOPs: meta equals real ------------------------------------------------------------------------------------------

def test_resnet18_flops_on_meta_equal_the_real_count():
    real = mp.build('imagenet/resnet18', seed=0)
    x = torch.randn(1, 3, 224, 224)
    with FlopCounterMode(display=False) as fwd: out = real(x)
    with FlopCounterMode(display=False) as bwd: out.float().sum().backward()
    got = flops(mp.build('imagenet/resnet18', device='meta'))
    assert got == {'forward': fwd.get_total_flops(), 'forward_backward': fwd.get_total_flops() + bwd.get_total_flops()}
    assert flops(real) == got                                     # a real model is counted on a meta copy too

def test_grouped_conv_backward_is_not_counted_dense():
    f = flops(mp.build('imagenet/convnextv2_tiny', device='meta'))
    assert 2.8 * f['forward'] < f['forward_backward'] < 3.05 * f['forward']

# --- parameter groups -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['imagenet/vit_b16', 'imagenet/convnextv2_tiny'])
def test_default_no_decay_groups_partition_every_parameter(name):
    model = mp.build(name, device='meta')
    groups = default_param_groups(model, 0.05)
    sets = {g['name']: set(g['param_names']) for g in groups}
    assert set.union(*sets.values()) == set(names(model)) and not set.intersection(*sets.values())
    assert sum(len(g['params']) for g in groups) == len(names(model))
    assert [g['weight_decay'] for g in groups] == [0.0, 0.05]
    no = sets['no_decay']
    assert all(p.ndim <= 1 for n, p in model.named_parameters() if n in no and n.rpartition('.')[2] not in ('pos', 'cls'))
    assert all(p.ndim >= 2 for n, p in model.named_parameters() if n in sets['decay'])
    if 'vit' in name: assert {'stem.pos.pos', 'stem.cls'} <= no
    else: assert {'stages.0.blocks.0.grn.gamma', 'stages.0.blocks.0.grn.beta', 'stem.norms.0.weight'} <= no

def test_param_groups_errors_and_optimizer():
    model = mp.build(MULTI, seed=0)
    with pytest.raises(SpecError, match=r"matched by both 'norms' and 'one_d'"):
        param_groups(model, [{'name': 'norms', 'match': {'group': 'norms'}}, {'name': 'one_d', 'match': {'ndim': 1}}, {'match': 'rest'}])
    with pytest.raises(SpecError, match=r"no group matches \d+ parameter"):
        param_groups(model, [{'match': {'group': 'heads'}}])
    with pytest.raises(SpecError) as e:
        param_groups(model, "- {match: {or: [{ndim: 1}, {name: {regex: '(bad'}}]}}\n- {match: rest}\n- {match: rest}")
    assert e.value.paths == ['[0].match.or[1].name.regex', '']
    groups = param_groups(model, [{'name': 'heads', 'match': {'group': 'heads'}, 'lr_scale': 10.0},
                                  {'name': 'body', 'match': 'rest', 'weight_decay': 0.1}])
    opt = torch.optim.AdamW(groups, lr=1e-3)
    loss = model.loss(model(torch.randn(4, 1, 16, 16), aux=torch.randn(4, 3)), {'digit': torch.randint(0, 10, (4,)), 'size': torch.randn(4)})
    loss.backward(); opt.step()
    assert [g['name'] for g in opt.param_groups] == ['heads', 'body'] and opt.param_groups[0]['lr_scale'] == 10.0

def test_freeze_leaves_frozen_parameters_out_of_the_groups():
    model = mp.build(MULTI, seed=0)
    frozen = freeze(model, {'name': {'startswith': ['stem.', 'stages.0.']}})
    assert frozen and count_params(model) == count_params(model, trainable=False) - sum(
        p.numel() for n, p in model.named_parameters() if n in frozen)
    groups = default_param_groups(model, 0.1)
    assert not set(frozen) & {n for g in groups for n in g['param_names']}
    assert set(unfreeze(model, {'group': 'stem'})) == {n for n in frozen if n.startswith('stem.')}

# --- metadata and filters on every preset ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', PRESETS)
def test_metadata_describes_every_preset(name):
    model = mp.build(name, device='meta')
    meta = model.parameter_groups_metadata
    all_names = set(names(model))
    structural = [k for k in meta if k in ('stem', 'final_norm', 'pool', 'neck', 'heads') or k.startswith('stages.')]
    parts = [set(ParamFilter({'group': k}).match(model)) for k in structural]
    assert set.union(*parts) == all_names and sum(map(len, parts)) == len(all_names)    # the parts partition the model
    for cat, pats in meta.items():
        got = set(ParamFilter({'group': cat}).match(model))
        assert bool(got) == bool(pats), f"{cat}: {pats}"
    norms = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, GRN)
    assert set(ParamFilter({'group': 'norms'}).match(model)) == {
        n for n, _ in model.named_parameters() if isinstance(model.get_submodule(n.rpartition('.')[0]), norms)}

def test_user_model_metadata_is_respected():
    @mp.MODELS.register('tiny_meta_cnn')
    class TinyCNN(nn.Module):
        "A user's model with its own groups."
        def __init__(self, width: int = 4, in_chans: int = 3):
            super().__init__()
            self.body, self.out = nn.Conv2d(in_chans, width, 3), nn.Linear(width, 10)
        parameter_groups_metadata = property(lambda self: {'backbone': ['body.*'], 'classifier': ['out.*']})
        def forward(self, x): return self.out(self.body(x).mean((2, 3)))
    try:
        model = mp.build({'input': {'shape': [3, 8, 8]}, 'model': {'type': 'tiny_meta_cnn'}})
        assert ParamFilter({'group': 'classifier'}).match(model) == ['out.weight', 'out.bias']
        assert count_params(model, by='group') == {'backbone': 3 * 4 * 9 + 4, 'classifier': 50}
        assert count_params(model, by='stage') == {'body': 112, 'out': 50}
        with pytest.raises(SpecError, match="unknown group 'head'"): ParamFilter({'group': 'head'}).match(model)
        assert summary(model).output_shapes == {'body': (1, 4, 6, 6), 'out': (1, 10)}
    finally:
        mp.MODELS.unregister('tiny_meta_cnn')

def test_registered_model_gets_the_metadata():
    "A model from the models registry that declares no metadata gets both, as a built Model has them."
    @mp.MODELS.register('tiny_plain_net')
    class Plain(nn.Module):
        def __init__(self, width: int = 8, in_chans: int = 1):
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(in_chans, width, 3), nn.LayerNorm(width), nn.Linear(width, 10)
        def forward(self, x): return self.head(self.norm(self.conv(x).mean((2, 3))))
    try:
        model = mp.build({'input': {'shape': [1, 8, 8]}, 'model': {'type': 'tiny_plain_net'}})
        assert model.parameter_groups_metadata['norms'] == ['norm.*'] and model.parameter_groups_metadata['head'] == ['head.*']
        assert ParamFilter({'group': 'norms'}).match(model) == ['norm.weight', 'norm.bias']
        assert model.pretrained_ckpt_handling_metadata['strip_prefixes'] == ['module.', '_orig_mod.']
        path = Path(tempfile.mkdtemp()) / 'plain.safetensors'
        mp.save_checkpoint(model, path)
        other = mp.build({'input': {'shape': [1, 8, 8]}, 'model': {'type': 'tiny_plain_net'}}, seed=1)
        mp.load_pretrained(other, path)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    finally:
        mp.MODELS.unregister('tiny_plain_net')

def test_filter_from_yaml_and_explain():
    model = mp.build(MULTI, seed=0)
    f = ParamFilter("""
or:
  - {layer_type: [LayerNorm, BatchNorm]}
  - and: [{name: {contains: mixer}}, {ndim: {ge: 2}}]
""")
    got = f.match(model)
    assert 'stages.1.blocks.0.mixer.qkv.weight' in got and 'stages.1.blocks.0.mixer.qkv.bias' not in got
    assert 'stem.norms.0.weight' in got
    table = explain(f, model)
    row = next(r for r in table.rows if r[0] == 'stages.1.blocks.0.mixer.qkv.weight')
    assert row[3] is True and row[4] == "or[1].and[0].name: contains 'mixer'; or[1].and[1].ndim: ge 2"
    assert '<table>' in table._repr_html_() and 'stages.1.blocks.0.mixer.qkv.weight' in str(table)
    with pytest.raises(SpecError) as e:
        ParamFilter({'and': [{'ndim': -1}, {'requires_grad': 'yes'}, {'not': {'name': {'startswith': 'a', 'endswith': 'b'}}}], 'or': []})
    assert e.value.paths == ['and[0].ndim', 'and[1].requires_grad', 'and[2].not.name', 'or']

# --- traversal ---------------------------------------------------------------------------------------------------------

def test_replaced_model_still_trains_and_summarises():
    model = mp.build(MULTI, seed=0)
    before = summary(model)
    report = replace(model, nn.GELU, lambda m: nn.SiLU())
    assert [r[0] for r in report] == ['stages.0.blocks.0.act'] and report[0][2] == 'SiLU()'   # the GLU is a SiLU one already
    from modelplay.layers import RMSNorm
    replace(model, 'LayerNorm', lambda m: RMSNorm(m.normalized_shape[0]))
    replace(model, 'mha', lambda m: (setattr(m, 'backend', 'math'), m)[1])
    assert not fmap(id, model, nn.LayerNorm) and fmap(id, model, RMSNorm)
    after = summary(model)
    assert after.backend == 'math' and after.params < before.params             # RMSNorm has no bias
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, aux, y = torch.randn(8, 1, 16, 16), torch.randn(8, 3), {'digit': torch.randint(0, 10, (8,)), 'size': torch.randn(8)}
    losses = []
    for _ in range(3):
        loss = model.loss(model(x, aux=aux), y); opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < losses[0]

def test_replace_keeps_device_dtype_and_mode_and_math_backend_agrees():
    model = mp.build('imagenet/vit_b16', ['input.shape=[3,32,32]', 'stem.patch=8', 'dim=32', 'stages.0.depth=2',
                                          'stages.0.layer.mixer.heads=2'], dtype=torch.float64, seed=0).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = model(x)
    replace(model, 'stages.*.mixer', lambda m: (setattr(m, 'backend', 'math'), m)[1])
    torch.testing.assert_close(model(x), ref)
    replace(model, re.compile(r'norm\d$'), lambda m: nn.LayerNorm(32, eps=1e-6))
    new = model.stages[0].blocks[0].norm1
    assert new.weight.dtype == torch.float64 and not new.training

def test_structure_and_compare(capsys):
    structure(mp.build('imagenet/resnet50', device='meta'), depth=3)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'Model  25,557,032 params' and '      stages.1.blocks  Sequential  1,219,584 params' in out
    c = compare('imagenet/resnet18', 'imagenet/resnet50', mp.build('imagenet/resnet18', device='meta'))
    assert list(c.data) == ['imagenet/resnet18', 'imagenet/resnet50', 'resnet18']
    assert c.data['resnet18']['flops_forward'] == c.data['imagenet/resnet18']['flops_forward']
    assert c.data['imagenet/resnet50']['by_stage']['stages.3']['output_shape'] == (1, 7, 7, 2048)
    assert 'imagenet/resnet50 params' in str(c) and '<table>' in c._repr_html_()