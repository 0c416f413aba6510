"""Reference: one training step of kusari's `fast` preset's conv nets in idiomatic PyTorch.

The nets are `kusari train ebgan --preset fast`'s (crates/models/src/nets/conv.rs, Config::make_fast):
G: z = 6, U(-1, 1) -> Linear 64*7*7 -> BatchNorm2d -> ReLU -> ConvTranspose2d 64->32 (4, 2, 1)
   -> BatchNorm2d -> ReLU -> ConvTranspose2d 32->1 (4, 2, 1) -> tanh.
D's body: Conv2d 1->8 (4, 2, 1) -> leaky ReLU 0.2 -> Conv2d 8->16 -> BatchNorm2d -> leaky ReLU
   -> Linear 16*7*7 -> 64 (the code S); no dropout. EBGAN's decoder: Linear 64 -> 16*7*7
   -> BatchNorm2d -> ReLU -> ConvTranspose2d 16->8 -> BatchNorm2d -> ReLU -> ConvTranspose2d 8->1;
   the other objectives' head: Linear 64 -> 1.
Weights N(0, 0.02), biases 0; BatchNorm as Chainer's (eps 2e-5, running averages with decay
0.9); D called on the real and on the fake batch (each normalized by its own statistics, the
preset's `separate`). Adam(1e-3, beta1 0.5) for both, batch 50, both gradient sets from one
forward pass. Objectives as ../shared/bench/torch_gan.py (EBGAN: margin 1, the preset's, and
0.1 * PT in the paper's form). Prints seconds per iteration (median of the timed iterations)
and the last losses.

Usage: python torch_fast.py MNIST_DIR [--objective O] [--iters N] [--warmup N] [--device D]
                            [--threads T]
"""
import argparse, gzip, statistics, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Z, G_UNITS, D_UNITS, CODE, BATCH, MARGIN = 6, 32, 8, 64, 50, 1.0


def load(d):
    b = gzip.open(f"{d}/train-images-idx3-ubyte.gz").read()[16:]
    x = np.frombuffer(b, np.uint8).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return torch.from_numpy(x * 2 - 1)


def bn(c):
    return nn.BatchNorm2d(c, eps=2e-5, momentum=0.1)


def init(module):
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)


class Gen(nn.Module):
    def __init__(self):
        super().__init__()
        top = G_UNITS * 2
        self.fc = nn.Linear(Z, top * 7 * 7)
        self.net = nn.Sequential(
            bn(top), nn.ReLU(),
            nn.ConvTranspose2d(top, G_UNITS, 4, 2, 1), bn(G_UNITS), nn.ReLU(),
            nn.ConvTranspose2d(G_UNITS, 1, 4, 2, 1), nn.Tanh())
        init(self)

    def forward(self, n, dev):
        z = torch.rand(n, Z, device=dev) * 2 - 1
        return self.net(self.fc(z).view(n, G_UNITS * 2, 7, 7))


class Dis(nn.Module):
    def __init__(self, ebgan):
        super().__init__()
        top = D_UNITS * 2
        self.enc = nn.Sequential(
            nn.Conv2d(1, D_UNITS, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(D_UNITS, top, 4, 2, 1), bn(top), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(top * 7 * 7, CODE))
        if ebgan:
            self.fc = nn.Linear(CODE, top * 7 * 7)
            self.dec = nn.Sequential(
                bn(top), nn.ReLU(),
                nn.ConvTranspose2d(top, D_UNITS, 4, 2, 1), bn(D_UNITS), nn.ReLU(),
                nn.ConvTranspose2d(D_UNITS, 1, 4, 2, 1))
        else:
            self.head = nn.Linear(CODE, 1)
        self.ebgan = ebgan
        init(self)

    def forward(self, x):
        s = self.enc(x)
        if self.ebgan:
            return self.dec(self.fc(s).view(-1, D_UNITS * 2, 7, 7)), s
        return self.head(s), s


def losses(objective, dis, x, fake):
    n = x.shape[0]
    if objective == "ebgan":
        out, _ = dis(x)
        real_e = F.mse_loss(out, x)
        out_f, s = dis(fake)
        fake_e = F.mse_loss(out_f, fake)
        sn = F.normalize(s, dim=1)
        cos = sn @ sn.t()
        pt = ((cos * cos).sum() - n) / (n * (n - 1))
        return real_e + F.relu(MARGIN - fake_e), fake_e + 0.1 * pt
    r, _ = dis(x)
    f, _ = dis(fake)
    if objective == "gan":
        return F.softplus(-r).mean() + F.softplus(f).mean(), F.softplus(-f).mean()
    if objective == "lsgan":
        return 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(), 0.5 * ((f - 1) ** 2).mean()
    if objective == "hinge":
        return F.relu(1 - r).mean() + F.relu(1 + f).mean(), -f.mean()
    raise SystemExit(f"unknown objective {objective}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mnist")
    p.add_argument("--objective", default="ebgan", choices=["ebgan", "gan", "lsgan", "hinge"])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = a.device
    data = load(a.mnist).to(dev)
    dis = Dis(a.objective == "ebgan").to(dev)
    gen = Gen().to(dev)
    od = torch.optim.Adam(dis.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    og = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    perm = torch.randperm(len(data), device=dev)
    pos = 0
    times = []
    for i in range(a.warmup + a.iters):
        if pos + BATCH > len(data):
            pos = 0
        x = data[perm[pos:pos + BATCH]]
        pos += BATCH
        t0 = time.perf_counter()
        fake = gen(BATCH, dev)
        loss_dis, loss_gen = losses(a.objective, dis, x, fake)
        gd = torch.autograd.grad(loss_dis, list(dis.parameters()), retain_graph=True,
                                 allow_unused=True)
        gg = torch.autograd.grad(loss_gen, list(gen.parameters()))
        for prm, g in zip(dis.parameters(), gd):
            prm.grad = g if g is not None else torch.zeros_like(prm)
        for prm, g in zip(gen.parameters(), gg):
            prm.grad = g
        od.step()
        og.step()
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    print(f"torch {torch.__version__} fast {a.objective} threads {torch.get_num_threads()} "
          f"s/iter {statistics.median(times):.5f} "
          f"dis/loss {loss_dis.item():.4f} gen/loss {loss_gen.item():.4f}")


if __name__ == "__main__":
    main()
