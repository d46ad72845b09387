"""Presets: every file in configs/ resolves, round-trips through YAML and builds; the standard architectures come out
exactly (trainable parameter counts equal to the reference implementations), their bigger siblings by overrides alone,
and ResNet-18's FLOPs equal a plain hand-written ResNet-18's."""
from pathlib import Path
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
import modelplay as mp

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.relative_to(ROOT / 'configs').with_suffix('').as_posix() for p in (ROOT / 'configs').rglob('*.yaml'))

def trainable(m): return sum(p.numel() for p in m.parameters() if p.requires_grad)

@pytest.mark.parametrize('name', PRESETS)
def test_preset_round_trips_and_builds_on_meta(name):
    spec = mp.load_spec(name)
    assert mp.load_spec(mp.save_spec(spec)) == spec
    model = mp.build(spec, device='meta')
    assert model.spec == spec and trainable(model) > 0

EXACT = [
    ('imagenet/resnet18', [], 11_689_512),
    ('imagenet/resnet50', [], 25_557_032),
    ('imagenet/resnet50', ['stages.2.depth=23'], 44_549_160),                                        # ResNet-101
    ('imagenet/resnet50', ['stages.1.depth=8', 'stages.2.depth=36'], 60_192_808),                    # ResNet-152
    ('imagenet/vit_b16', [], 86_567_656),
    ('imagenet/vit_b16', ['dim=1024', 'stages.0.depth=24', 'stages.0.layer.mixer.heads=16'], 304_326_632),  # ViT-L/16
    ('imagenet/vit_b16', ['dim=384', 'stages.0.layer.mixer.heads=6'], 22_050_664),                  # ViT-S/16
    ('imagenet/convnextv2_tiny', [], 28_635_496),
    ('lm/gpt2', [], 124_439_808),
    ('lm/llama_7b', [], 6_738_415_616),
]

@pytest.mark.parametrize('name,overrides,count', EXACT, ids=[f"{n}{'+' if o else ''}{','.join(o)}" for n, o, _ in EXACT])
def test_exact_parameter_counts(name, overrides, count):
    assert trainable(mp.build(name, overrides, device='meta')) == count

def test_counts_match_the_reference_implementations():
    from reference import resnet, vit, convnextv2, gpt, llama
    with torch.device('meta'):
        refs = {'imagenet/resnet18': resnet.resnet18(), 'imagenet/vit_b16': vit.vit(), 'lm/gpt2': gpt.gpt2(),
                'imagenet/convnextv2_tiny': convnextv2.convnextv2()}
    for name, ref in refs.items():
        assert trainable(mp.build(name, device='meta')) == trainable(ref), name

def forward_flops(model, x):
    with FlopCounterMode(display=False) as fc: model(x)
    return fc.get_total_flops()

def test_resnet18_flops_equal_a_plain_resnet18():
    from reference import resnet
    x = torch.randn(1, 3, 224, 224)
    ours, ref = mp.build('imagenet/resnet18').eval(), resnet.resnet18().eval()
    with torch.no_grad(): assert forward_flops(ours, x) == forward_flops(ref, x)
