"""Training speed on MNIST, on demand (not a unit test):

    MODELPLAY_DATA=../shared/datasets python tests/bench/train_speed.py [--seeds 5] [--skip-classic] [--skip-zoo]

1. `mnist/fast` through modelplay, one run per seed: wall time from after `import modelplay` to the end of the test
   evaluation (reading the .gz files, building, fitting, evaluating), and the test accuracy.
2. The same model and recipe through the loop a user writes: a DataLoader over a TensorDataset of normalised float
   tensors, fp32, default memory format — interleaved with (1), same seeds; the ratio of the medians is reported.
3. PyTorch's classic examples/mnist network and recipe (Adadelta, lr 1.0, batch 64, StepLR 0.7), one epoch.
4. Training throughput (samples/s, forward + backward + step) of every MNIST preset of the zoo."""
import argparse, os, platform, statistics, sys, time
t_import = time.perf_counter()
import torch, torch.nn as nn, torch.nn.functional as F
import modelplay as mp
t_import = time.perf_counter() - t_import

def modelplay_run(seed):
    t = time.perf_counter()
    data = mp.load_data('mnist')
    model = mp.build('mnist/fast', seed=seed)
    mp.fit(model, data, seed=seed, progress=False, eval=False)
    acc = mp.evaluate(model, data)['acc']
    return time.perf_counter() - t, acc

def plain_net(spec):
    "The conv stages of `spec` (mnist/fast) as the nn.Sequential a user writes: NCHW, default memory format."
    layers, c, h = [], spec['input']['shape'][0], spec['input']['shape'][1]
    for st in spec['stages']:
        L = st['layer']; k = L['kernel_size']
        layers.append(nn.Conv2d(c, st['dim'], k, stride=st['stride'], padding=k // 2, bias=L['bias']))
        h = (h + 2 * (k // 2) - k) // st['stride'] + 1
        pool = [nn.MaxPool2d(L['pool_size'])] if L['pool'] == 'max' else []
        assert L['pool'] in ('max', 'none') and L['norm']['type'] == 'batch' and L['act']['type'] == 'relu', L
        norm_act = [nn.BatchNorm2d(st['dim']), nn.ReLU()]
        layers += pool + norm_act if L['pool_first'] else norm_act + pool
        h, c = h // L['pool_size'] if pool else h, st['dim']
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * h, spec['heads']['label']['classes']))

def plain_run(seed):
    "The model and recipe of mnist/fast, written the way most scripts are: DataLoader over normalised floats, fp32, NCHW."
    t = time.perf_counter()
    spec = mp.load_spec('mnist/fast'); r = spec['train']
    data = mp.load_data('mnist')
    mean, std = data.mean[0], data.std[0]
    xtr = (data.train.x.float() / 255 - mean) / std; xte = (data.test.x.float() / 255 - mean) / std
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(seed)
    dl = DataLoader(TensorDataset(xtr, data.train.y), batch_size=r['batch_size'], shuffle=True, drop_last=True, generator=g)
    torch.manual_seed(seed)
    model = plain_net(spec)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in mp.build(spec).parameters())
    lr = r['optimizer']['lr']
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=len(dl) * r['epochs'], pct_start=r['warmup'],
                                                anneal_strategy='linear')
    model.train()
    for _ in range(r['epochs']):
        for x, y in dl:
            loss = F.cross_entropy(model(x), y, label_smoothing=r['label_smoothing'])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    model.eval()
    with torch.no_grad(): acc = sum((model(xte[i:i + 1000]).argmax(1) == data.test.y[i:i + 1000]).sum().item() for i in range(0, 10000, 1000)) / 10000
    return time.perf_counter() - t, acc

def classic_run():
    "PyTorch's examples/mnist: 2 convs + dropout + 2 FC (1.2M params), Adadelta lr 1.0, batch 64, one epoch."
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
            self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
            self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)
        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
            x = self.fc1(torch.flatten(self.dropout1(x), 1))
            return F.log_softmax(self.fc2(self.dropout2(F.relu(x))), dim=1)
    t = time.perf_counter()
    data = mp.load_data('mnist')
    xtr = (data.train.x.float() / 255 - 0.1307) / 0.3081; xte = (data.test.x.float() / 255 - 0.1307) / 0.3081
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(1)
    dl = DataLoader(TensorDataset(xtr, data.train.y), batch_size=64, shuffle=True)
    model = Net(); opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    model.train()
    for x, y in dl:
        opt.zero_grad(); F.nll_loss(model(x), y).backward(); opt.step()
    model.eval()
    with torch.no_grad(): acc = sum((model(xte[i:i + 1000]).argmax(1) == data.test.y[i:i + 1000]).sum().item() for i in range(0, 10000, 1000)) / 10000
    return time.perf_counter() - t, acc, sum(p.numel() for p in model.parameters())

def zoo_throughput():
    data = mp.load_data('mnist')
    rows = []
    for name in [n for n in mp.list_presets() if n.startswith('mnist/')]:
        d = mp.mnist_multitask(data) if name.startswith('mnist/mh_') else data
        model = mp.build(name, seed=0)
        mp.fit(model, d, steps=3, batch_size=128, progress=False, eval=False)          # warm-up
        h = mp.fit(model, d, steps=15, batch_size=128, progress=False, eval=False)
        rows.append((name, sum(p.numel() for p in model.parameters()), h.samples_per_s))
    return rows

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=5); ap.add_argument('--skip-classic', action='store_true')
    ap.add_argument('--skip-zoo', action='store_true'); ap.add_argument('--skip-plain', action='store_true')
    a = ap.parse_args()
    mp.apply_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"AMX bf16: {mp.cpu_has_bf16()}, amp auto -> {mp.amp_dtype('auto', torch.device('cpu'))}")
    print(f"import modelplay (with torch): {t_import:.2f} s (not counted below)")
    mp.load_data('mnist')   # warm the file cache so every run reads the .gz files from memory alike
    ours, plain = [], []
    for seed in range(a.seeds):
        ours.append(modelplay_run(seed)); print(f"  seed {seed}: modelplay {ours[-1][0]:.2f} s acc {ours[-1][1]:.4f}", flush=True)
        if not a.skip_plain:
            plain.append(plain_run(seed)); print(f"  seed {seed}: plain loop {plain[-1][0]:.2f} s acc {plain[-1][1]:.4f}", flush=True)
    med = lambda rs: statistics.median(r[0] for r in rs)
    print(f"mnist/fast via modelplay: median {med(ours):.2f} s, acc min {min(r[1] for r in ours):.4f} mean {statistics.mean(r[1] for r in ours):.4f} over {a.seeds} seeds")
    if plain:
        print(f"same recipe, plain DataLoader loop (fp32, NCHW): median {med(plain):.2f} s, acc min {min(r[1] for r in plain):.4f}")
        print(f"speed-up of modelplay over the plain loop: {med(plain) / med(ours):.2f}x")
    if not a.skip_classic:
        t, acc, n = classic_run(); print(f"classic examples/mnist ({n:,} params, Adadelta, batch 64), one epoch: {t:.1f} s, acc {acc:.4f}")
    if not a.skip_zoo:
        print(f"{'preset':<26} {'params':>10} {'train samples/s':>16}")
        for name, n, sps in zoo_throughput(): print(f"{name:<26} {n:>10,} {sps:>16,.0f}")

if __name__ == '__main__': main()
