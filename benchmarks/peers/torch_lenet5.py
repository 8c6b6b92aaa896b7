"""PyTorch peer of W5: LeNet-5-Caffe and BMRS LeNet-5 training steps on the CPU.

``--model lenet5_caffe``: the network of sparsejax's ``LeNet5Caffe`` (conv 5x5
1 -> 20, ReLU, max-pool 2; conv 5x5 20 -> 50, ReLU, max-pool 2; Linear
800 -> 500, ReLU; Linear 500 -> 10) on 28x28x1 images, Adam 1e-3,
cross-entropy.

``--model bmrs_lenet5``: sparsejax's ``BMRSLeNet5`` (conv 5x5 1 -> 6, ReLU,
gate, max-pool 2; conv 5x5 6 -> 16, ReLU, gate, max-pool 2; Linear
400 -> 120, ReLU, gate; Linear 120 -> 84, ReLU, gate; Linear 84 -> 10) on
32x32x1 images, every unit multiplied by a log-uniform gate: theta =
exp(clip(mu + sigma * ndtri(gamma), -20, 0)), gamma = clip(Phi(alpha) + u Z,
1e-5, 1 - 1e-5), u ~ U(0, 1) drawn per element of the activations
(``--noise per_element``, BMRS) or once per unit and batch (``per_batch``),
gradients by autograd; loss = cross-entropy + the mean over layers of the
mean KL of the gates (the BMRS code's objective), Adam 1.4e-3. mu starts at
0 and log sigma at -5, as in sparsejax.

Images and labels are drawn once at random; ``--steps`` timed steps of
``--batch`` images after ``--warmup`` untimed ones. Threads: PyTorch's own
choice unless ``OMP_NUM_THREADS`` is set (the benchmark sets it).

Prints one JSON line: model, noise, batch, steps, seconds, images_per_s,
ms_per_step, loss, threads.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "shared", "peers"))
import common  # noqa: E402  (the shared peers' report)

LOG_A, LOG_B, GAMMA_EPS = -20.0, 0.0, 1e-5


def lenet5_caffe():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(20, 50, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(800, 500), torch.nn.ReLU(),
        torch.nn.Linear(500, 10))


def ndtr(x):
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


class Gate(torch.nn.Module):
    """Truncated log-normal multiplicative noise on ``units`` channels or features."""

    def __init__(self, units, noise):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(units))
        self.log_sigma = torch.nn.Parameter(torch.full((units,), -5.0))
        self.noise = noise

    def bounds(self):
        sigma = torch.exp(self.log_sigma.clamp(-20.0, 5.0))
        return sigma, (LOG_A - self.mu) / sigma, (LOG_B - self.mu) / sigma

    def forward(self, x):  # x: (batch, units, ...) as PyTorch lays it out
        sigma, alpha, beta = self.bounds()
        cdf_alpha = ndtr(alpha)
        z = ndtr(beta) - cdf_alpha
        view = (1, -1) + (1,) * (x.dim() - 2)
        shape = x.shape if self.noise == "per_element" else (1, x.shape[1]) + (1,) * (x.dim() - 2)
        u = torch.rand(shape)
        gamma = (cdf_alpha.view(view) + u * z.view(view)).clamp(GAMMA_EPS, 1 - GAMMA_EPS)
        log_theta = self.mu.view(view) + sigma.view(view) * torch.special.ndtri(gamma)
        return x * torch.exp(log_theta.clamp(LOG_A, LOG_B))

    def kl(self):
        sigma, alpha, beta = self.bounds()
        z = ndtr(beta) - ndtr(alpha)
        pdf = lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
        return (-torch.log(sigma) - torch.log(z) - 0.5 * math.log(2 * math.pi * math.e)
                + math.log(LOG_B - LOG_A) - (alpha * pdf(alpha) - beta * pdf(beta)) / (2 * z))


class BMRSLeNet5(torch.nn.Module):
    def __init__(self, noise):
        super().__init__()
        self.conv0, self.conv1 = torch.nn.Conv2d(1, 6, 5), torch.nn.Conv2d(6, 16, 5)
        self.dense0, self.dense1 = torch.nn.Linear(400, 120), torch.nn.Linear(120, 84)
        self.out = torch.nn.Linear(84, 10)
        self.gates = torch.nn.ModuleList(Gate(n, noise) for n in (6, 16, 120, 84))

    def forward(self, x):
        pool = torch.nn.functional.max_pool2d
        x = pool(self.gates[0](torch.relu(self.conv0(x))), 2)
        x = pool(self.gates[1](torch.relu(self.conv1(x))), 2)
        x = self.gates[2](torch.relu(self.dense0(torch.flatten(x, 1))))
        x = self.gates[3](torch.relu(self.dense1(x)))
        return self.out(x)

    def penalty(self):
        return sum(g.kl().mean() for g in self.gates) / len(self.gates)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("lenet5_caffe", "bmrs_lenet5"), required=True)
    p.add_argument("--noise", choices=("per_element", "per_batch"), default="per_element")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    if args.model == "lenet5_caffe":
        model, side, lr = lenet5_caffe(), 28, 1e-3
        penalty = lambda: 0.0  # noqa: E731
    else:
        model, side, lr = BMRSLeNet5(args.noise), 32, 1.4e-3
        penalty = model.penalty
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.rand(args.batch, 1, side, side)
    y = torch.randint(0, 10, (args.batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        (loss + penalty()).backward()
        optimizer.step()
        return loss

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss = float(loss.detach())
    seconds = time.perf_counter() - start
    common.report(workload=f"W5_{args.model}", impl="torch-eager", model=args.model,
                  noise=args.noise if args.model == "bmrs_lenet5" else None, batch=args.batch,
                  steps=args.steps, seconds=round(seconds, 4),
                  images_per_s=round(args.batch * args.steps / seconds, 1),
                  ms_per_step=round(1e3 * seconds / args.steps, 3), loss=round(loss, 4),
                  threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
