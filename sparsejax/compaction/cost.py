"""What a model costs: parameters, multiply-accumulates and floating-point operations.

* :func:`parameters`: the entries of a variable tree.
* :func:`macs`: the multiply-accumulates of the matrix products and convolutions of
  ``fn(*args)``, counted exactly from its jaxpr: a product contributes its output size
  times its contracted size, a convolution its output size times its window's taps and
  input channels per group (as ``ptflops`` and the papers count; bias additions,
  activations and pooling are not MACs).
* :func:`nonzero_macs`: the multiply-accumulates whose weight is not zero, the
  theoretical cost of an unstructured sparse network (the count of Blalock et al. 2020,
  "What is the State of Neural Network Pruning?", and of the papers they survey).
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


#: Primitives that move a weight's entries without changing which are zero.
_SAME_ENTRIES = frozenset({"reshape", "transpose", "convert_element_type", "copy", "squeeze",
                           "expand_dims", "rev"})


def _eqn_macs(eqn) -> int:
  """The multiply-accumulates of one product or convolution (0 for anything else)."""
  name = eqn.primitive.name
  if name == "dot_general":
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[a] for a in lc)
  if name == "conv_general_dilated":
    _, rhs_spec, _ = eqn.params["dimension_numbers"]
    rhs = eqn.invars[1].aval.shape
    taps = math.prod(rhs[k] for k in rhs_spec[2:]) * rhs[rhs_spec[1]]
    return math.prod(eqn.outvars[0].aval.shape) * taps
  return 0


def _jaxpr_macs(jaxpr, density: dict | None = None) -> float:
  """The MACs of ``jaxpr``; with ``density`` (variable -> share of nonzero entries, for the
  weights), each product's MACs times the density of its weight operand (1 without one)."""
  total = 0.0
  density = {} if density is None else density

  def of(var):
    return None if hasattr(var, "val") else density.get(var)  # literals have no density

  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in axes.CALLS:
      sub = eqn.params[axes.CALLS[name]]
      sub = getattr(sub, "jaxpr", sub)
      inner = {v: of(u) for u, v in zip(eqn.invars, sub.invars) if of(u) is not None}
      total += _jaxpr_macs(sub, inner)
    elif name in _SAME_ENTRIES and of(eqn.invars[0]) is not None:
      density[eqn.outvars[0]] = of(eqn.invars[0])
    elif (macs_here := _eqn_macs(eqn)):
      weights = [of(v) for v in eqn.invars[:2] if of(v) is not None]
      total += macs_here * (min(weights) if weights else 1.0)
  return total


def macs(fn: Callable, *args) -> int:
  """Multiply-accumulates of the products and convolutions of ``fn(*args)`` (module
  docstring); divide by the batch size for a per-example count."""
  return int(_jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr))


def nonzero_macs(fn: Callable, variables, *args) -> float:
  """The multiply-accumulates of ``fn(variables, *args)`` whose weight is not zero.

  A product or convolution with an operand that is one leaf of ``variables`` (up to
  reshapes, transposes and dtype conversions) counts its MACs times that leaf's share
  of nonzero entries: exactly the nonzero weights' MACs for a dense layer, and for a
  convolution every tap's MACs as if no output position read the zero padding (as the
  papers count). Other products count in full. Divide by the batch size for a
  per-example count.
  """
  closed = jax.make_jaxpr(fn)(variables, *args)
  leaves = jax.tree.leaves(variables)
  density = {var: float(np.count_nonzero(np.asarray(leaf))) / max(1, np.size(leaf))
             for var, leaf in zip(closed.jaxpr.invars, leaves)}
  return _jaxpr_macs(closed.jaxpr, density)


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
