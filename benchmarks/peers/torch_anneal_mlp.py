"""PyTorch peer of W6: the EEE 198 simulated-annealing mask search on the bias-free MLP.

The reference's loop, as its ``main_SA_MLP.py`` runs it (sparsejax reference
notes ``jax_ecosystem_and_annealing.md``, sections 2.2 and 2.3): for every
candidate, the swap move (``n`` random kept weights pruned, ``n`` random
pruned weights restored; numpy), the check against a memory of the last 50
candidates (a repeat is a candidate within Hamming distance ``n`` of one;
redrawn at most 30 times), then the network **reloaded from its checkpoint on
disk**, masked, and evaluated (top-1 accuracy, %) on the first 2,000 MNIST
training images, and the acceptance against the running mean of the level's
accepted accuracies. Schedule: T0 0.006 x 0.999 per level, 1 -> 50
candidates per level (x1.005), the sawtooth neighbourhood from n0 = the kept
count, stopped after ``--evaluations`` candidates.

Prints one JSON line: evaluations, seconds, evals_per_s and the best level mean.

With ``--sample-levels L1,L2,...`` it instead times ``--sample-candidates``
candidates at each of those levels (their move size ``n`` from the sawtooth,
the memory filled with 50 candidates first, as it is from level 50 on) and
prints one JSON line per level with the seconds per candidate, so that a
search too long to run here can be timed by its phases.
"""
import argparse
import math
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "shared", "peers"))
import common  # noqa: E402  (the shared peers' MNIST reader and report)


def deconsnet():
    return torch.nn.Sequential(
        torch.nn.Linear(784, 300, bias=False), torch.nn.ReLU(),
        torch.nn.Linear(300, 100, bias=False), torch.nn.ReLU(),
        torch.nn.Linear(100, 10, bias=False))


def step_from(rng, mask, n):
    ones, zeros = np.flatnonzero(mask), np.flatnonzero(~mask)
    n = min(n, ones.size, zeros.size)
    new = mask.copy()
    new[rng.choice(ones, n, replace=False)] = False
    new[rng.choice(zeros, n, replace=False)] = True
    return new


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--evaluations", type=int, default=500)
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--eval-examples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-levels", default="",
                   help="comma-separated levels to time candidates at (no search)")
    p.add_argument("--sample-candidates", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = common.load_mnist("train")
    x, y = torch.from_numpy(x[:args.eval_examples]), torch.from_numpy(y[:args.eval_examples])
    model = deconsnet()
    shapes = [m.weight.shape for m in model if isinstance(m, torch.nn.Linear)]
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    checkpoint = os.path.join(tempfile.mkdtemp(), "init.pt")
    torch.save(model.state_dict(), checkpoint)

    def evaluate(mask):
        model.load_state_dict(torch.load(checkpoint))
        offset = 0
        with torch.no_grad():
            for layer, shape, size in zip([m for m in model if isinstance(m, torch.nn.Linear)],
                                          shapes, sizes):
                layer.weight.mul_(torch.from_numpy(mask[offset:offset + size]).view(shape))
                offset += size
            return 100.0 * (model(x).argmax(1) == y).float().mean().item()

    n_pruned = int(total * args.sparsity)
    mask = np.zeros(total, bool)
    mask[rng.permutation(total)[:total - n_pruned]] = True
    n = peak = total - n_pruned
    if args.sample_levels:
        sample_phases(args, rng, mask, n, evaluate)
        return
    ave, best_mean, t, iters = 5.0, -math.inf, 0.006, 1.0
    memory, evaluations = [], 0
    with common.Timer() as timer:
        while evaluations < args.evaluations:
            accepted = []
            for _ in range(min(int(iters), args.evaluations - evaluations)):
                for _attempt in range(30):
                    candidate = step_from(rng, mask, n)
                    if not any(np.count_nonzero(candidate ^ m) < n for m in memory):
                        break
                accuracy = evaluate(candidate)
                evaluations += 1
                memory = (memory + [candidate])[-50:]
                delta = (ave - accuracy) / 100.0
                if delta < 0 or rng.random() < math.exp(-delta / t):
                    mask = candidate
                    accepted.append(accuracy)
                    ave = sum(accepted) / len(accepted)
            if ave > best_mean:
                best_mean = ave
            t *= 0.999
            iters = min(50.0, 1.005 * iters)
            n = max(1, math.floor(0.99 * n))
            if n < 0.5 * peak:
                peak = math.floor(0.75 * peak)
                n = peak
    common.report(workload="W6_annealing_mlp", impl="torch-reference-loop", chains=1,
                  evaluations=evaluations, seconds=round(timer.seconds, 3),
                  evals_per_s=round(evaluations / timer.seconds, 2),
                  best_mean=round(best_mean, 2))


def sawtooth(n0, level):
    n = peak = n0
    for _ in range(level):
        n = max(1, math.floor(0.99 * n))
        if n < 0.5 * peak:
            peak = math.floor(0.75 * peak)
            n = peak
    return n


def sample_phases(args, rng, mask, n0, evaluate):
    """Seconds per candidate (move, memory check, reload, evaluation, acceptance) at levels."""
    for level in map(int, args.sample_levels.split(",")):
        n = sawtooth(n0, level)
        memory = [step_from(rng, mask, n) for _ in range(50)]
        with common.Timer() as timer:
            for _ in range(args.sample_candidates):
                for _attempt in range(30):
                    candidate = step_from(rng, mask, n)
                    if not any(np.count_nonzero(candidate ^ m) < n for m in memory):
                        break
                accuracy = evaluate(candidate)
                memory = (memory + [candidate])[-50:]
                if rng.random() < 0.5:  # the acceptance's cost; the mask's walk is immaterial
                    mask = candidate
        common.report(workload="W6_annealing_mlp", impl="torch-reference-loop", level=level,
                      n=n, candidates=args.sample_candidates,
                      seconds_per_candidate=round(timer.seconds / args.sample_candidates, 6),
                      last_accuracy=round(accuracy, 2))


if __name__ == "__main__":
    main()
