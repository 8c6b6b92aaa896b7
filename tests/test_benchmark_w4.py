"""W4 (benchmarks/w4_vgg.py) at a tiny size on the CPU: it runs and counts FLOP right."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from sparsejax.models import get_model
from tests.test_cli import REPO, clean_env

sys.path.insert(0, str(REPO / "benchmarks"))
import w4_vgg  # noqa: E402


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_the_flop_count_is_xlas():
  model = get_model("vgg16_bn")
  x = jnp.zeros((1, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  # XLA's count adds BatchNorm, relu, pooling and bias work to the products.
  assert 2 * w4_vgg.forward_macs_per_image() == pytest.approx(cost["flops"], rel=0.02)
  assert w4_vgg.FLOP_PER_IMAGE == 6 * w4_vgg.forward_macs_per_image()


@pytest.mark.slow  # about 45 s: VGG-16-BN compiled in a subprocess
def test_w4_runs_at_a_tiny_size():
  done = subprocess.run(
      [sys.executable, "benchmarks/w4_vgg.py", "--batch", "4", "--steps", "2", "--repeats", "1",
       "--dtypes", "float32", "--no-peer"],
      cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in done.stdout.splitlines()]
  run, summary = rows
  assert run["impl"] == "jax-lax-scan" and run["dtype"] == "float32" and run["images_per_s"] > 0
  assert run["loss"] == pytest.approx(2.3, abs=0.5)  # ten random classes: about ln 10
  assert 0 < summary["fraction_of_matmul_jax"] < 1
