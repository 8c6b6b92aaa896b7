"""Why compaction's FLOPs and XLA:CPU's latency part ways on LeNet-5-Caffe (issue 36).

``python benchmarks/compaction_latency.py`` (alone on the machine) prints

1. LeNet-5-Caffe at the L0 paper's structure 9-18-65-25 (Louizos et al. 2018; the
   kept units chosen by weight norm, their values do not matter for timing):
   dense and compacted latency at batch 256 (median of ``--rounds`` calls, with and
   without the gather of single flattened features) beside the FLOPs ratio;
2. the first convolution alone (5x5, one input channel, batch 256, 28x28) at
   several output-channel counts: XLA:CPU's convolution is not monotone in them;
   and the 9-channel one computed at 18 channels (the extra filters zero) and sliced;
3. each stage of LeNet-5-Caffe alone (convolution, bias, ReLU, 2x2 max pooling) at
   the dense widths and at the reference's: where the dense time goes.
"""

import argparse

import jax
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.compaction import compact, cost
from sparsejax.models import get_model
from sparsejax.studies.speedup import median_latency

STRUCTURE = {"Conv_0": 9, "Conv_1": 18, "Dense_0 inputs": 65, "Dense_1 inputs": 25}


def top(scores, k):
  keep = np.zeros(scores.size, bool)
  keep[np.argsort(-scores)[:k]] = True
  return keep


def reference_structure_masks(params):
  """Masks that leave LeNet-5-Caffe at :data:`STRUCTURE`."""
  masks = jax.tree.map(lambda a: np.ones(a.shape, bool), params)
  rng = np.random.default_rng(0)
  conv0 = top(np.linalg.norm(np.asarray(params["Conv_0"]["kernel"]).reshape(-1, 20), axis=0), 9)
  conv1 = top(np.linalg.norm(np.asarray(params["Conv_1"]["kernel"]).reshape(-1, 50), axis=0), 18)
  for name, keep in (("Conv_0", conv0), ("Conv_1", conv1)):
    masks[name]["kernel"][..., ~keep] = False
    masks[name]["bias"][~keep] = False
  features = top(rng.random(800) + np.tile(conv1, 16), 65)  # (position, channel) rows
  masks["Dense_0"]["kernel"][~features] = False
  masks["Dense_1"]["kernel"][~top(rng.random(500), 25)] = False
  return masks


@jax.jit
def stage(x, kernel):
  """A LeNet-5-Caffe stage: VALID convolution, bias, ReLU, 2x2 max pooling."""
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = jax.nn.relu(y + 0.1)
  return jax.lax.reduce_window(y, -jax.numpy.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                               "VALID")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  model = get_model("lenet5_caffe")
  x = jax.random.normal(jax.random.key(0), (256, 28, 28, 1))
  params = model.init(jax.random.key(1), x[:1])["params"]
  variables = {"params": masks_lib.apply(reference_structure_masks(params), params)}
  forward = jax.jit(lambda v, x: model.apply(v, x))
  dense = cost.summary(lambda v, x: model.apply(v, x), variables, x[:1])
  print(f"LeNet-5-Caffe at {STRUCTURE}, batch 256, {jax.devices()[0].device_kind}")
  for gather in (True, False):
    small = compact(model, variables, example=x[:1], gather=gather)
    size = cost.summary(small.apply, small.variables, x[:1])
    apply = jax.jit(small.apply)
    for _ in range(args.repeats):
      t_dense = median_latency(forward, variables, x, rounds=args.rounds)
      t_small = median_latency(apply, small.variables, x, rounds=args.rounds)
      print(f"  gather={gather}: dense {1e3 * t_dense:.2f} ms, compacted {1e3 * t_small:.2f} ms, "
            f"latency ratio {t_small / t_dense:.3f}, FLOPs ratio "
            f"{size['flops'] / dense['flops']:.3f}")
  print("First convolution alone (5x5x1 -> C, batch 256, 28x28), ms:")
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  for channels in (4, 8, 9, 12, 16, 18, 20, 24, 32):
    kernel = jax.random.normal(jax.random.key(2), (5, 5, 1, channels))
    times = [median_latency(conv, x, kernel, rounds=args.rounds) for _ in range(args.repeats)]
    print(f"  C={channels:2d}: " + ", ".join(f"{1e3 * t:.2f}" for t in times))
  padded = jax.jit(lambda x, k: conv(x, jax.numpy.pad(k, ((0, 0),) * 3 + ((0, 9),)))[..., :9])
  kernel = jax.random.normal(jax.random.key(2), (5, 5, 1, 9))
  times = [median_latency(padded, x, kernel, rounds=args.rounds) for _ in range(args.repeats)]
  print("  C=9 computed at 18 and sliced: " + ", ".join(f"{1e3 * t:.2f}" for t in times))
  print("Stages alone (convolution, bias, ReLU, 2x2 max pooling; batch 256), ms:")
  for name, shape, cin, couts in (("first", (256, 28, 28, 1), 1, (20, 9)),
                                  ("second", (256, 12, 12, 20), 20, (50, 18))):
    inputs = jax.random.normal(jax.random.key(3), shape)
    for cout in couts:
      c = cin if name == "first" or cout == 50 else 9
      stage_in = inputs[..., :c]
      kernel = jax.random.normal(jax.random.key(4), (5, 5, c, cout))
      times = [median_latency(stage, stage_in, kernel, rounds=args.rounds)
               for _ in range(args.repeats)]
      print(f"  {name} stage {c} -> {cout}: " + ", ".join(f"{1e3 * t:.2f}" for t in times))


if __name__ == "__main__":
  main()
