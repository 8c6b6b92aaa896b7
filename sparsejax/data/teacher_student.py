"""Teacher-student regression data, a pure function of a seed.

The study of Barth & von Petersenn, "Efficient compression of neural networks
and datasets" (arXiv 2505.17469), ``HelperFunctions/generate_networks_and_data.jl``:

* **Teacher.** An MLP ``[2, 5, 8, 1]`` with tanh hidden layers, an identity
  output and biases. After a standard initialisation its first two kernels
  are rescaled, with ``s = weight_scaling = 2``::

      W_1 <- s * W_1 + 1,        W_2 <- s * W_2,

  which makes the teacher's function far from linear on the input box.
* **Data.** ``x ~ U[-1, 1]^2`` and ``y = teacher(x) + noise * eps`` with
  ``eps ~ N(0, I)`` and ``noise = 0.08``: ``noise`` is the *standard deviation*
  of the label noise. (The reference README calls it a variance; its code uses
  it as a standard deviation, as here.)
* **Sizes.** 300 / 1,000 / 5,000 train / val / test points, used full-batch.
  The reference student is ``[2, 25, 25, 1]`` with the same activations
  (:data:`STUDENT_WIDTHS`).

**Keys.** Everything derives from one key ``k`` (``jax.random.key(seed)``) by
``jax.random.fold_in(k, offset)`` with the reference's seed offsets: teacher
``+35`` (:data:`TEACHER_KEY_OFFSET`), train ``+1``, val ``+2``, test ``+3``,
and ``+43`` for the student's initialisation (:data:`STUDENT_KEY_OFFSET`, used
by the runner, not here). The reference draws its test set with the
validation seed (``seed + 2`` for both, still at its HEAD), so its test set
repeats its validation set; sparsejax gives the test set its own key.

**Initialisation.** The teacher is :class:`sparsejax.models.MLP` with Flax's
default ``Dense`` initialisation: kernels ``lecun_normal`` (a truncated normal
with variance ``1 / fan_in``) and zero biases, before the rescaling above. The
reference initialises with Lux's ``Dense`` defaults (fan-scaled uniform
kernels, the exact rule depending on the Lux version), so sparsejax teachers
come from a similar but not identical distribution, and no draw reproduces a
reference teacher value for value (the random number generators differ too).

Every function here is pure and works under ``jax.vmap`` over keys or integer
seeds (the sizes and widths are Python values; mark them static under
``jax.jit``)::

  keys = jax.vmap(jax.random.key)(jnp.arange(8))
  splits, teachers = jax.vmap(teacher_student_data_from_key)(keys)
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from sparsejax.data.splits import Split, Splits
from sparsejax.models import MLP

Dtype = Any
Variables = Any

#: Teacher architecture of the reference, input and output included.
TEACHER_WIDTHS = (2, 5, 8, 1)
#: Student architecture of the reference.
STUDENT_WIDTHS = (2, 25, 25, 1)

#: Train / validation / test points of the reference (``train_set_size`` etc. 0 in a config).
N_TRAIN, N_VAL, N_TEST = 300, 1000, 5000

#: ``fold_in`` offsets of the reference's seeds (``seed + offset``).
TEACHER_KEY_OFFSET = 35
TRAIN_KEY_OFFSET = 1
VAL_KEY_OFFSET = 2
TEST_KEY_OFFSET = 3
#: Offset of the student's initialisation key, for the runner.
STUDENT_KEY_OFFSET = 43


def teacher_model(widths: Sequence[int] = TEACHER_WIDTHS, dtype: Dtype = jnp.float32) -> MLP:
  """The teacher network: an MLP with tanh hidden layers and identity output."""
  return MLP(widths=tuple(widths), activation="tanh", dtype=dtype, param_dtype=dtype)


def scale_teacher_weights(variables: Variables, weight_scaling: float) -> Variables:
  """Rescales the first two kernels: ``W_1 <- s W_1 + 1``, ``W_2 <- s W_2``.

  Biases and later layers are unchanged.

  Args:
    variables: the teacher's Flax variables ``{"params": {"Dense_i": ...}}``.
    weight_scaling: ``s`` (the reference's ``teacher_weight_scaling``).

  Returns:
    The rescaled variables (a new pytree).
  """
  params = dict(variables["params"])
  for name, shift in (("Dense_0", 1.0), ("Dense_1", 0.0)):
    if name in params:
      layer = dict(params[name])
      layer["kernel"] = weight_scaling * layer["kernel"] + shift
      params[name] = layer
  return {**variables, "params": params}


def init_teacher(key: jax.Array, widths: Sequence[int] = TEACHER_WIDTHS, *,
                 weight_scaling: float = 2.0, dtype: Dtype = jnp.float32) -> Variables:
  """Initialises the teacher (Flax default init) and rescales its weights.

  Args:
    key: PRNG key of the initialisation.
    widths: ``(d_in, h_1, ..., d_out)``.
    weight_scaling: ``s`` in :func:`scale_teacher_weights`.
    dtype: parameter dtype.

  Returns:
    The teacher's variables, to be used with ``teacher_model(widths).apply``.
  """
  variables = teacher_model(widths, dtype).init(key, jnp.zeros((1, widths[0]), dtype))
  return scale_teacher_weights(variables, weight_scaling)


def teacher_student_data_from_key(
    key: jax.Array,
    *,
    n_train: int = N_TRAIN,
    n_val: int = N_VAL,
    n_test: int = N_TEST,
    noise: float = 0.08,
    teacher_widths: Sequence[int] = TEACHER_WIDTHS,
    weight_scaling: float = 2.0,
    dtype: Dtype = jnp.float32,
) -> tuple[Splits, Variables]:
  """Draws a teacher and its train / val / test data from ``key``.

  Each split draws ``x ~ U[-1, 1]^{d_in}`` and ``y = teacher(x) + noise * eps``,
  ``eps ~ N(0, I)``, from its own key ``fold_in(key, offset)`` (offsets in the
  module docstring). Vmappable over ``key``.

  Args:
    key: the run's PRNG key (``jax.random.key(seed)``).
    n_train: training points.
    n_val: validation points.
    n_test: test points.
    noise: standard deviation of the Gaussian label noise.
    teacher_widths: teacher architecture ``(d_in, ..., d_out)``.
    weight_scaling: ``s`` of the teacher's rescaling.
    dtype: dtype of inputs, targets and teacher parameters.

  Returns:
    ``(splits, teacher_variables)``: ``splits.train.x`` is
    ``(n_train, d_in)`` and ``splits.train.y`` is ``(n_train, d_out)``, both
    ``dtype``; ``teacher_model(teacher_widths).apply(teacher_variables, x)``
    is the noiseless target.
  """
  teacher = teacher_model(teacher_widths, dtype)
  variables = init_teacher(jax.random.fold_in(key, TEACHER_KEY_OFFSET), teacher_widths,
                           weight_scaling=weight_scaling, dtype=dtype)
  d_in, d_out = teacher_widths[0], teacher_widths[-1]

  def draw(offset: int, n: int) -> Split:
    x_key, noise_key = jax.random.split(jax.random.fold_in(key, offset))
    x = jax.random.uniform(x_key, (n, d_in), dtype, minval=-1.0, maxval=1.0)
    eps = jax.random.normal(noise_key, (n, d_out), dtype)
    return Split(x, (teacher.apply(variables, x) + noise * eps).astype(dtype))

  splits = Splits(
      train=draw(TRAIN_KEY_OFFSET, n_train),
      val=draw(VAL_KEY_OFFSET, n_val),
      test=draw(TEST_KEY_OFFSET, n_test),
  )
  return splits, variables


def teacher_student_data(seed: int | jax.Array, **kwargs) -> tuple[Splits, Variables]:
  """:func:`teacher_student_data_from_key` with ``key = jax.random.key(seed)``.

  ``seed`` may be a traced integer (``jax.vmap`` over an array of seeds); the
  keyword arguments are those of :func:`teacher_student_data_from_key`.
  """
  return teacher_student_data_from_key(jax.random.key(seed), **kwargs)
