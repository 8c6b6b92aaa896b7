"""Workload W4: VGG-16-BN training steps on CIFAR-10-shaped data, float32 and bfloat16.

The VGG-16-BN of the efficient-compression reference (:mod:`sparsejax.models.vgg`:
13 conv 3x3 with bias, BatchNorm, relu, 5 max-pools, classifier 512-512-10
with dropout 0.4), Adam 1e-3, batch 500, 32x32x3 images and labels drawn
once at random, trained by the runner's compiled epoch (a ``lax.scan`` over
the batches, ``make_train_step`` with dense masks). ``bfloat16`` is
``dtype="bfloat16"``: the layers compute in bfloat16, parameters, optimiser
state, BatchNorm statistics and the loss stay float32.

The PyTorch peer (``benchmarks/peers/torch_vgg.py``) trains the same network
with the same batch and optimiser (``torch.autocast`` for bfloat16,
``--peer-compile`` for ``torch.compile``). Figures: images per second per
dtype (medians over the repeats, compilation excluded), the FLOP rate as a
fraction of the device's measured matrix-product rate in the same dtype
(training FLOP = 3 x the forward's 2 x multiply-adds per image), and the
ratios to the peer. The issue's goal (GPU): >= 50 % of the matrix rate in
bfloat16 and >= 1.2x the peer.

Usage (from the repository root; on a GPU machine the defaults)::

  .venv/bin/python benchmarks/w4_vgg.py [--batch 500] [--steps 10] [--repeats 3] \\
      [--dtypes float32,bfloat16] [--peer-compile] [--no-peer]

On a CPU, ``--batch 8 --steps 2 --repeats 1`` is the smoke test the test suite runs.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

import common
from sparsejax import masks, objectives
from sparsejax.models import get_model
from sparsejax.models.vgg import VGG16_CONFIG
from sparsejax.train import CLASSIFICATION, create_train_state, make_epoch_fn, make_train_step

WORKLOAD = "W4_vgg16_bn_cifar_shaped"
IMAGE, CLASSES, FC, LR = 32, 10, 512, 1e-3
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MATMUL_GOAL, PEER_GOAL = 0.5, 1.2


def forward_macs_per_image() -> int:
  """Multiply-adds of one VGG-16-BN forward pass on a 32x32x3 image (convs and Dense).

  A 3x3 SAME convolution's taps that fall on the zero padding are not counted
  (as XLA's cost analysis does not): along a side of ``s`` pixels the outputs
  see ``3 s - 2`` taps in all, so a ``s x s`` map costs ``(3 s - 2)^2`` taps
  per input and output channel, not ``9 s^2``.
  """
  size, channels, macs = IMAGE, 3, 0
  for entry in VGG16_CONFIG:
    if entry == "M":
      size //= 2
      continue
    macs += (3 * size - 2) ** 2 * channels * entry
    channels = entry
  return macs + channels * FC + FC * FC + FC * CLASSES


#: Training FLOP per image: forward plus backward, 3 x 2 x multiply-adds.
FLOP_PER_IMAGE = 6 * forward_macs_per_image()


def make_epoch(dtype: str, batch: int):
  model = get_model("vgg16_bn", dtype=DTYPES[dtype], param_dtype=jnp.float32)
  objective, optimizer = objectives.plain(), optax.adam(LR)
  step = make_train_step(model, CLASSIFICATION, objective, optimizer, jit=False)
  epoch = jax.jit(make_epoch_fn(step, batch, shuffle=False, jit=False), donate_argnums=0)

  def init(key, x):
    return create_train_state(key, model, x[:1], objective, optimizer,
                              prunable=masks.every_leaf)
  return init, epoch


def run_jax(dtype: str, batch: int, steps: int, seed: int = 0) -> dict:
  data_key, init_key, warm_key, key = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.uniform(data_key, (batch * steps, IMAGE, IMAGE, 3), jnp.float32)
  y = jax.random.randint(jax.random.fold_in(data_key, 1), (batch * steps,), 0, CLASSES)
  init, epoch = make_epoch(dtype, batch)
  state = init(init_key, x)
  state, _ = jax.block_until_ready(epoch(state, (x, y), warm_key))  # Compiles.
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(epoch(state, (x, y), key))
  seconds = time.perf_counter() - start
  return dict(workload=WORKLOAD, impl="jax-lax-scan", dtype=dtype, batch=batch, steps=steps,
              seconds=round(seconds, 4), images_per_s=round(batch * steps / seconds, 1),
              loss=round(float(metrics["loss"]), 4))


def main():
  p = common.parser(__doc__.splitlines()[0], "torch_vgg.py")
  p.add_argument("--batch", type=int, default=500)
  p.add_argument("--steps", type=int, default=10, help="timed training steps per repeat")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--peer-compile", action="store_true", help="torch.compile the peer's model")
  p.add_argument("--no-peer", action="store_true", help="JAX only (the CPU smoke test)")
  p.set_defaults(peer=str(common.REPO / "benchmarks" / "peers" / "torch_vgg.py"))
  args = p.parse_args()
  dtypes = common.listed(p, "--dtypes", args.dtypes, DTYPES)
  load_start = common.loadavg()
  machine = common.machine()
  for dtype in dtypes:
    jax_rows, torch_rows, matmul = [], [], []
    for _ in range(args.repeats):
      jax_rows.append(run_jax(dtype, args.batch, args.steps))
      matmul.append(common.matmul_gflops(dtype=DTYPES[dtype]))
      if not args.no_peer:
        torch_rows.append(common.run_peer(
            args.torch_python, args.peer, "--batch", str(args.batch), "--steps",
            str(args.steps), "--dtype", dtype, *(["--compile"] if args.peer_compile else []),
            threads=args.peer_threads))
    jax_row = common.median_row(jax_rows, ("images_per_s", "seconds"))
    jax_row.update(machine)
    peak = common.median(matmul, 1)
    achieved = jax_row["images_per_s"] * FLOP_PER_IMAGE / 1e9
    summary = dict(workload=WORKLOAD, dtype=dtype, batch=args.batch,
                   flop_per_image=FLOP_PER_IMAGE, matmul_gflops=peak,
                   achieved_gflops_jax=round(achieved, 1),
                   fraction_of_matmul_jax=round(achieved / peak, 3))
    common.emit(**jax_row)
    if torch_rows:
      torch_row = common.median_row(torch_rows, ("images_per_s", "seconds"))
      common.emit(**torch_row)
      ratio = jax_row["images_per_s"] / torch_row["images_per_s"]
      summary.update(images_per_s_ratio_jax_over_torch=round(ratio, 3),
                     fraction_of_matmul_torch=round(
                         torch_row["images_per_s"] * FLOP_PER_IMAGE / 1e9 / peak, 3),
                     peer_goal_met=ratio >= PEER_GOAL)
    if dtype == "bfloat16":
      summary["matmul_goal_met"] = achieved / peak >= MATMUL_GOAL
    common.emit(**summary, device=machine["device"], peer_threads=args.peer_threads,
                loadavg_start=load_start, loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
