r"""DRR: a smooth l0 surrogate (Barth & von Petersenn).

L. S. Barth and P. von Petersenn, "Efficient compression of neural networks
and datasets", arXiv 2505.17469; the reference's ``DRR_procedure.jl`` and
``DRR_modification`` / ``DRR_NORM_*_modification``. The acronym is expanded in
the reference's transformer README as "Deterministic Reparameterization with
Regularization".

.. math::

   R(\theta) = \alpha \sum_i c_i \big(1 - e^{-\beta |\theta_i|}\big)
             + \rho \sum_i \theta_i^2
   \;\xrightarrow[\beta \to \infty]{}\; \alpha \|\theta\|_0 + \rho\|\theta\|_2^2
   \quad (c_i = 1),

over every parameter leaf (biases and BatchNorm scale/shift included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import (Objective, abs_sign, check_nonnegative, leaf_sum,
                                       weight_penalty)
from sparsejax.objectives.penalties import l2


def norm_factors(params, *, layer_norm: bool = True):
  r"""DRR's NORM factors :math:`c`, one Python float per parameter leaf.

  Each factor spreads the same total penalty mass over every group of
  parameters instead of a mass proportional to the group's size:

  * ``layer_norm=True`` (the reference's default ``layer_NORM``):
    :math:`c = N_\text{total} / (N_\text{layer} \cdot L)`. The reference's
    layer is a non-empty ``layer_*`` entry of the Lux parameter NamedTuple;
    here it is a **top-level entry of the Flax params dict** (``Dense_0``
    holding ``kernel`` and ``bias``, ``BatchNorm_3`` holding ``scale`` and
    ``bias``), :math:`N_\text{layer}` its parameter count and :math:`L` the
    number of such entries. The two agree for flat chains such as the
    sparsejax models; for nested Lux chains the reference counts :math:`L`
    over the outermost ``layer_*`` entries but takes :math:`N_\text{layer}`
    from the innermost one.
  * ``layer_norm=False``: :math:`c = N_\text{total} / (N_\text{block} \cdot B)`
    where the block is the dict directly containing the leaf and :math:`B` the
    number of leaves named ``kernel`` (the reference counts its ``weight``
    arrays, ``get_block_number``). Blocks without a kernel (BatchNorm) still
    get a factor, so the masses need not sum to :math:`N_\text{total}`, as in
    the reference.

  Args:
    params: the parameter tree (only shapes are read, so tracers are fine).
    layer_norm: group by top-level entry (True) or by enclosing dict (False).

  Returns:
    A tree shaped like ``params`` with a float per leaf.

  Raises:
    ValueError: if ``layer_norm=False`` and no leaf is named ``kernel``.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  group_of = [path[:1] if layer_norm else path[:-1] for path, _ in flat]
  sizes: dict = {}
  for group, (_, leaf) in zip(group_of, flat):
    sizes[group] = sizes.get(group, 0) + jnp.size(leaf)
  if layer_norm:
    n_groups = len(sizes)
  else:
    n_groups = sum(1 for path, _ in flat if masks_lib.path_str(path[-1:]) == "kernel")
    if n_groups == 0:
      raise ValueError("layer_norm=False normalises by the number of leaves named "
                       "'kernel', and params has none")
  total = sum(sizes.values())
  return jax.tree_util.tree_unflatten(
      treedef, [total / (sizes[group] * n_groups) for group in group_of])


def drr(alpha: float, beta: float, *, rho: float = 0.0, norm: bool = False,
        layer_norm: bool = True) -> Objective:
  r"""The DRR penalty (Barth & von Petersenn, arXiv 2505.17469).

  .. math::

     R(\theta) = \alpha \sum_i c_i \big(1 - e^{-\beta |\theta_i|}\big)
               + \rho \sum_i \theta_i^2,
     \qquad
     \frac{\partial R}{\partial \theta_i}
       = \alpha \beta c_i \operatorname{sign}(\theta_i) e^{-\beta|\theta_i|}
         + 2\rho\theta_i,

  the gradient the reference adds to the data-loss gradient. As in the
  reference, :math:`\operatorname{sign}(0) = 0`, so an entry that is exactly
  zero (a zero-initialised bias) gets no push from the :math:`\alpha` term.
  :math:`c_i = 1` without NORM; with ``norm=True`` see :func:`norm_factors`.

  :math:`\rho` is **not** normalised: NORM scales only the :math:`\alpha`
  term, which is what the reference code does. (The reference README says
  NORM also normalises :math:`\rho`; its code does not, and sparsejax follows
  the code.)

  Args:
    alpha: weight :math:`\alpha \ge 0` of the smooth l0 term.
    beta: sharpness :math:`\beta > 0`; :math:`R \to \alpha\|\theta\|_0` as
      :math:`\beta \to \infty`. The reference's ``DRR`` loss defaults to 10,
      its ImageNet runs use 5.
    rho: weight :math:`\rho \ge 0` of the L2 term (gradient :math:`2\rho\theta`).
    norm: scale the :math:`\alpha` term per layer (the reference's ``NORM``).
    layer_norm: with ``norm``, group by layer (True) or by block (False).

  Raises:
    ValueError: if ``beta <= 0``. At :math:`\beta = 0` the term and its
      gradient vanish identically, so DRR would silently train without
      regularisation, which is what the reference's ``TrainArgs`` default
      :math:`\beta = 0` does (its example ``run_an_experiment.jl`` never sets
      it). Also if ``alpha`` or ``rho`` is negative.
  """
  check_nonnegative("alpha", alpha)
  if not beta > 0:
    raise ValueError(
        f"beta must be > 0, got {beta}: at beta = 0 the DRR term "
        "1 - exp(-beta |theta|) and its gradient vanish, so nothing would be "
        "regularised (the reference's TrainArgs default beta = 0 does exactly that)")
  l2_penalty = l2(rho).penalty

  def smooth_l0(leaf, factor):
    # 1 - exp rather than -expm1: the derivative is then exactly the reference's
    # alpha beta sign(theta) exp(-beta |theta|) (expm1's is expm1 + 1), and the
    # step evaluates one exponential, not two (docs/benchmarks.md, W2 profile).
    return factor * leaf_sum(1 - jnp.exp(-beta * abs_sign(leaf)))

  def penalty(params):
    factors = (norm_factors(params, layer_norm=layer_norm) if norm
               else jax.tree.map(lambda _: 1.0, params))
    terms = jax.tree.leaves(jax.tree.map(smooth_l0, params, factors))
    return alpha * sum(terms) + l2_penalty(params, ())

  return weight_penalty(penalty)

