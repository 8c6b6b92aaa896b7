"""What a model costs: parameters, multiply-accumulates and floating-point operations.

* :func:`parameters`: the entries of a variable tree.
* :func:`macs`: the multiply-accumulates of the matrix products and convolutions of
  ``fn(*args)``, counted exactly from its jaxpr: a product contributes its output size
  times its contracted size, a convolution its output size times its window's taps and
  input channels per group (as ``ptflops`` and the papers count; bias additions,
  activations and pooling are not MACs).
* :func:`flops`: XLA's own count, from its cost analysis of the program (every
  operation, with a product's multiply and add counted apart).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np

from sparsejax.compaction import axes


def parameters(variables) -> int:
  """The number of entries of a variable tree."""
  return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(variables))


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in axes.CALLS:
      sub = eqn.params[axes.CALLS[name]]
      total += _jaxpr_macs(getattr(sub, "jaxpr", sub))
    elif name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[a] for a in lc)
    elif name == "conv_general_dilated":
      _, rhs_spec, _ = eqn.params["dimension_numbers"]
      rhs = eqn.invars[1].aval.shape
      taps = math.prod(rhs[k] for k in rhs_spec[2:]) * rhs[rhs_spec[1]]
      total += math.prod(eqn.outvars[0].aval.shape) * taps
  return total


def macs(fn: Callable, *args) -> int:
  """Multiply-accumulates of the products and convolutions of ``fn(*args)`` (module
  docstring); divide by the batch size for a per-example count."""
  return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def flops(fn: Callable, *args) -> float:
  """Floating-point operations of one ``fn(*args)``, from XLA's cost analysis of the
  lowered program (``nan`` where the backend gives none; on the CPU it equals the
  compiled program's, without compiling)."""
  cost = jax.jit(fn).lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", math.nan))


def summary(fn: Callable, variables, example: Any) -> dict[str, float]:
  """``{"params", "macs", "flops"}`` of ``fn(variables, example)``, per example."""
  batch = int(np.shape(example)[0])
  return {"params": parameters(variables), "macs": macs(fn, variables, example) // batch,
          "flops": flops(fn, variables, example) / batch}
