"""Pruning-at-initialisation scores on tiny pytrees, by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import masks, pruning
from sparsejax.pruning import saliency

INITIAL = {"Dense_0": {"kernel": jnp.array([[1.0, 2.0], [3.0, 0.5]]),
                       "bias": jnp.array([0.1, -0.1])}}
TRAINED = {"Dense_0": {"kernel": jnp.array([[1.5, -2.0], [2.5, 0.25]]),
                       "bias": jnp.array([0.3, 0.2])}}


def kernel(tree):
  return np.asarray(tree["Dense_0"]["kernel"])


def test_lth_keeps_the_largest_final_magnitudes():
  scores = saliency.lth_scores(TRAINED)
  np.testing.assert_allclose(kernel(scores), [[1.5, 2.0], [2.5, 0.25]])
  kept = masks.global_top_k(scores, masks.ones_like(TRAINED), 2)  # the kernel only
  assert kept["Dense_0"]["bias"] is None
  np.testing.assert_array_equal(kernel(kept), [[False, True], [True, False]])


def test_deconst_scores_a_sign_flip_zero():
  # w_0 w_K = [[1.5, -4], [7.5, 0.125]]: the 2 flipped sign, so it scores 0.
  scores = saliency.deconst_scores(INITIAL, TRAINED)
  np.testing.assert_allclose(kernel(scores), [[1.5, 0.0], [2.5, 0.25]])
  kept = masks.global_top_k(scores, masks.ones_like(TRAINED), 2)
  np.testing.assert_array_equal(kernel(kept), [[True, False], [True, False]])


def test_snip_is_the_gradient_times_the_weight():
  # L = sum(w * c) has dL/dw = c: the score is |c w|.
  c = {"Dense_0": {"kernel": jnp.array([[1.0, -3.0], [0.0, 2.0]]), "bias": jnp.array([1.0, 1.0])}}

  def loss(params, batch):
    return sum(jnp.sum(p * b) for p, b in zip(jax.tree.leaves(params), jax.tree.leaves(batch)))
  scores = saliency.snip_scores(loss, INITIAL, c)
  np.testing.assert_allclose(kernel(scores), [[1.0, 6.0], [0.0, 1.0]])
  np.testing.assert_allclose(scores["Dense_0"]["bias"], [0.1, 0.1])


def test_filter_scores_per_output_unit():
  w_0 = {"k": jnp.array([[1.0, -1.0, 2.0], [-3.0, 0.5, 2.0]])}   # (in, out): means -1, -0.25, 2
  w_k = {"k": jnp.array([[2.0, 1.0, -1.0], [-1.0, -3.0, 0.0]])}  # means 0.5, -1, -0.5
  np.testing.assert_allclose(saliency.filter_magnitude_scores(w_k)["k"], [1.5, 2.0, 0.5])
  # sign(mean w_0) * mean w_K: -0.5, 1, -0.5.
  np.testing.assert_allclose(saliency.magsign_scores(w_0, w_k)["k"], [-0.5, 1.0, -0.5])
  np.testing.assert_array_equal(masks.top_k(saliency.magsign_scores(w_0, w_k)["k"], 2),
                                [True, True, False])


def test_scores_are_exported_and_jit():
  assert pruning.lth_scores is saliency.lth_scores
  np.testing.assert_allclose(kernel(jax.jit(pruning.deconst_scores)(INITIAL, TRAINED)),
                             kernel(saliency.deconst_scores(INITIAL, TRAINED)))

