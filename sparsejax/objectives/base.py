"""The Objective contract shared by every regularised training method.

An :class:`Objective` is a NamedTuple of pure functions, in the manner of
``optax.GradientTransformation``. The one train-step builder
(:func:`sparsejax.train.make_train_step`) consumes it, so a new method is a new
Objective and never a new training loop.

Dual variables (Lagrange multipliers, PMMP's ``u``) live in the objective state
like any other trainable variable; ``ascend`` marks them, and the step flips the
sign of their gradient (gradient *ascent*) before the shared optimiser update,
then ``project`` maps the state back onto its feasible set.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Params = Any
ObjectiveState = Any
Gates = Optional[dict]


class Objective(NamedTuple):
  """A regularised training objective.

  Attributes:
    init: ``(key, params) -> state``, the extra variables the method trains.
    forward: ``(params, state, key, train) -> (effective_params, gates)``, what
      the model runs with. ``gates`` is ``None`` or a dict of per-unit
      multiplicative factors keyed by layer name, broadcastable to that layer's
      activations.
    penalty: ``(params, state) -> scalar``, the regulariser added to the data
      loss (duals included).
    readout: ``(params, state) -> (params, masks)``, the deterministic sparse
      result. ``masks`` may be ``None`` (nothing pruned by the objective).
    ascend: ``state -> bool pytree`` (same structure as the state), True for the
      dual variables whose gradient the step ascends.
    project: ``state -> state``, the projection applied after each update
      (clamping probabilities to [0, 1], multipliers to >= 0).
    loss_transform: ``(per_example_loss, state) -> per_example_loss``, applied
      to the task's per-example loss before the mean, in training and in
      evaluation (the Gaussian code length with a learnable noise scale of
      :func:`sparsejax.objectives.gauss.with_gauss_loss`); the identity
      otherwise.
  """
  init: Callable[[jax.Array, Params], ObjectiveState]
  forward: Callable[[Params, ObjectiveState, jax.Array, bool], tuple[Params, Gates]]
  penalty: Callable[[Params, ObjectiveState], jax.Array]
  readout: Callable[[Params, ObjectiveState], tuple[Params, Any]]
  ascend: Callable[[ObjectiveState], Any] = lambda state: jax.tree.map(lambda _: False, state)
  project: Callable[[ObjectiveState], ObjectiveState] = lambda state: state
  loss_transform: Callable[[jax.Array, ObjectiveState], jax.Array] = lambda loss, state: loss


def no_state(key: jax.Array, params: Params) -> ObjectiveState:
  """``init`` for objectives without extra variables: an empty tuple."""
  del key, params
  return ()


def identity_forward(params, state, key, train):
  """``forward`` for weight-level methods that run the parameters as they are."""
  del state, key, train
  return params, None


def identity_readout(params, state):
  """``readout`` for objectives that prune nothing themselves."""
  del state
  return params, None


def weight_penalty(penalty_fn: Callable[[Params], jax.Array]) -> Objective:
  """An Objective whose only ingredient is a penalty on the parameters."""
  return Objective(
      init=no_state,
      forward=identity_forward,
      penalty=lambda params, state: penalty_fn(params),
      readout=identity_readout,
  )


def leaf_sum(x: jax.Array) -> jax.Array:
  """``sum(x)`` over every entry, as a row of ones times ``x`` seen as a matrix.

  The same value as ``jnp.sum`` (up to the order of the float additions), at a
  fraction of the cost on the CPU: XLA:CPU lowers a full reduction of a
  weight matrix to a tree of ``reduce-window`` ops that run far below the
  memory bandwidth (a jitted sum of the 784 x 300 kernel of LeNet-300-100
  took 130 us a call on the 2-core AMD EPYC, the matrix-vector product 16 us),
  and a penalty sums every parameter at every step (docs/benchmarks.md, W2
  profile). Other dtypes (bfloat16), vectors and
  empty arrays use ``jnp.sum``.
  """
  if x.ndim < 2 or x.size == 0 or x.dtype not in (jnp.float32, jnp.float64):
    return jnp.sum(x)
  rows = x.reshape(-1, x.shape[-1])
  # HIGHEST: a GPU would otherwise round the float32 entries to TF32 first.
  column_sums = jnp.dot(jnp.ones((rows.shape[0],), x.dtype), rows,
                        precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(column_sums)


def tree_sum(fn: Callable[[jax.Array], jax.Array], params: Params) -> jax.Array:
  """``sum_leaves sum(fn(leaf))`` in the parameters' dtype (:func:`leaf_sum`)."""
  leaves = jax.tree_util.tree_leaves(params)
  if not leaves:
    return jnp.zeros(())
  return sum(leaf_sum(fn(p)) for p in leaves)


def weighted_tree_sum(weight, fn: Callable[[jax.Array], jax.Array], params: Params) -> jax.Array:
  """``weight * tree_sum(fn, params)``; a plain ``0.0`` when ``weight`` is the number 0,
  so that a switched-off term (DRR's or the elastic net's default ``rho = 0``)
  costs nothing in the compiled step."""
  if isinstance(weight, (int, float)) and weight == 0:
    return jnp.zeros(())
  return weight * tree_sum(fn, params)


def abs_sign(x: jax.Array) -> jax.Array:
  """``|x|`` written as ``x * sign(x)``, so its derivative is ``sign(x)``: 0 at 0.

  The reference's hand-coded L1 and DRR gradients use ``sign``, which is 0 at
  0; ``jnp.abs`` has derivative 1 there and would push exact zeros (e.g.
  zero-initialised biases) away from zero.
  """
  return x * jnp.sign(x)


def check_nonnegative(name: str, value: float) -> None:
  """Raises ``ValueError`` naming ``name`` unless ``value >= 0``."""
  if not value >= 0:
    raise ValueError(f"{name} must be >= 0, got {value}")
