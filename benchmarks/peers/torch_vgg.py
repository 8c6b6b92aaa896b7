"""PyTorch peer of W4: VGG-16-BN training steps on CIFAR-10-shaped data.

The same network as sparsejax's ``VGG16BN`` (13 conv 3x3 with bias ->
BatchNorm (momentum 0.1 in PyTorch's convention, eps 1e-5) -> ReLU, max-pool
2x2 after each block of configuration D, then Linear 512-512 -> ReLU ->
Dropout 0.4, Linear 512-512 -> ReLU -> Dropout 0.4, Linear 512-10), Adam
1e-3, cross-entropy, images 32x32x3 and labels drawn once at random,
``--steps`` timed steps of ``--batch`` images after one warm-up step
(``--compile``: after ``torch.compile`` and its warm-up). ``--dtype
bfloat16`` runs the forward pass under ``torch.autocast`` (the parameters and
optimiser state stay float32, as in sparsejax's mixed precision). Runs on the
GPU when one is visible, else on the CPU.

Prints one JSON line: dtype, batch, steps, seconds, images_per_s, loss.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "shared", "peers"))
import common  # noqa: E402  (the shared peers' report)

CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
          512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_bn(classes=10, fc=512, dropout=0.4):
    layers, channels = [], 3
    for entry in CONFIG:
        if entry == "M":
            layers.append(torch.nn.MaxPool2d(2))
            continue
        layers += [torch.nn.Conv2d(channels, entry, 3, padding=1),
                   torch.nn.BatchNorm2d(entry, momentum=0.1, eps=1e-5), torch.nn.ReLU()]
        channels = entry
    return torch.nn.Sequential(
        *layers, torch.nn.Flatten(),
        torch.nn.Linear(channels, fc), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(fc, fc), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(fc, classes))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = vgg16_bn().to(device).train()
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(args.steps, args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.steps, args.batch), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def step(i):
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = step_model(x[i])
        loss = torch.nn.functional.cross_entropy(logits.float(), y[i])
        loss.backward()
        optimizer.step()
        return loss

    step(0)  # Warm-up (and compilation with --compile).
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    loss = float(loss)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    common.report(workload="W4_vgg16_bn_cifar_shaped", impl="torch-eager" + (
        "-compiled" if args.compile else ""), dtype=args.dtype, batch=args.batch,
        steps=args.steps, seconds=round(seconds, 4),
        images_per_s=round(args.batch * args.steps / seconds, 1), loss=round(loss, 4),
        device=device)


if __name__ == "__main__":
    main()
