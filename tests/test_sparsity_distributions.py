"""Layer-wise sparsity budgets: hand-computed ER/ERK densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.sparsity import distributions

SHAPES = {"Dense_0": (4, 3), "Dense_1": (3, 100), "Dense_2": (100, 2), "Conv_0": (3, 3, 2, 4)}
SIZES = {"Dense_0": 12, "Dense_1": 300, "Dense_2": 200, "Conv_0": 72}  # 584 in all


def tree(bias=True):
  """Masks for four kernels (and ``None`` biases, not prunable)."""
  out = {}
  for name, shape in SHAPES.items():
    out[name] = {"kernel": jnp.ones(shape, bool)}
    if bias:
      out[name]["bias"] = None
  return out


def kernels(d):
  return {name: d[name]["kernel"] for name in SHAPES}


def kept(d):
  return sum(d[name] * SIZES[name] for name in d)


def test_erk_one_layer_exceeds_one_then_a_second_one_cascades():
  # ERK raw scores (sum of dims) / (product of dims), times n = sum of dims:
  #   Dense_0 (4, 3):       7/12,   7/12 * 12   = 7
  #   Dense_1 (3, 100):   103/300, 103/300 * 300 = 103
  #   Dense_2 (100, 2):   102/200, 102/200 * 200 = 102
  #   Conv_0 (3, 3, 2, 4): 12/72,   12/72 * 72  = 12      -> sum 224
  # density 0.75 -> target 0.75 * 584 = 438 kept.
  # Round 1: eps = 438 / 224 = 1.955357; Dense_0: eps * 7/12 = 1.1406 > 1 -> dense,
  #   Dense_2: eps * 0.51 = 0.99723 <= 1 (not yet).
  # Round 2: eps = (438 - 12) / (103 + 102 + 12) = 426 / 217 = 1.963134;
  #   Dense_2: eps * 0.51 = 1.001198 > 1 -> dense.
  # Round 3: eps = (438 - 12 - 200) / (103 + 12) = 226 / 115 = 1.965217;
  #   Dense_1 = eps * 103/300 = 0.674725, Conv_0 = eps * 12/72 = 0.327536.
  d = kernels(distributions.leaf_densities(tree(), 0.75, "erk"))
  eps = 226 / 115
  assert d["Dense_0"] == 1.0 and d["Dense_2"] == 1.0
  assert d["Dense_1"] == pytest.approx(eps * 103 / 300, rel=1e-12)
  assert d["Conv_0"] == pytest.approx(eps * 12 / 72, rel=1e-12)
  assert d["Dense_1"] == pytest.approx(0.674725, abs=1e-6)
  assert kept(d) == pytest.approx(438, rel=1e-12)


def test_erk_without_a_dense_layer_and_with_one():
  # density 0.2: eps = 0.2 * 584 / 224 = 116.8 / 224, no layer exceeds 1.
  d = kernels(distributions.leaf_densities(tree(), 0.2))  # erk is the default
  eps = 116.8 / 224
  for name, shape in SHAPES.items():
    assert d[name] == pytest.approx(eps * sum(shape) / np.prod(shape), rel=1e-12)
  assert kept(d) == pytest.approx(116.8, rel=1e-12)
  # density 0.7: eps = 408.8 / 224 = 1.825; Dense_0 at 1.0646 -> dense;
  # then eps = (408.8 - 12) / 217 = 1.828571 and Dense_2 = 0.9326 stays below 1.
  d = kernels(distributions.leaf_densities(tree(), 0.7))
  eps = 396.8 / 217
  assert d["Dense_0"] == 1.0
  assert d["Dense_2"] == pytest.approx(eps * 0.51, rel=1e-12)
  assert d["Dense_1"] == pytest.approx(eps * 103 / 300, rel=1e-12)
  assert d["Conv_0"] == pytest.approx(eps / 6, rel=1e-12)
  assert kept(d) == pytest.approx(408.8, rel=1e-12)


def test_er_uses_the_last_two_axes_and_power_scales_the_scores():
  # ER: Conv_0 scores (2 + 4) / (2 * 4) = 0.75 (its 3x3 window ignored); raw * n:
  # 7 + 103 + 102 + 0.75 * 72 = 266; density 0.2: eps = 116.8 / 266.
  d = kernels(distributions.leaf_densities(tree(), 0.2, "er"))
  eps = 116.8 / 266
  assert d["Conv_0"] == pytest.approx(eps * 0.75, rel=1e-12)
  assert d["Dense_0"] == pytest.approx(eps * 7 / 12, rel=1e-12)
  # ERK with power 0: every score is 1, the uniform distribution.
  d = kernels(distributions.leaf_densities(tree(), 0.2, "erk", power=0.0))
  assert all(v == pytest.approx(0.2, rel=1e-12) for v in d.values())
  # power 2: scores squared; sum of r^2 n = 49/12 + 103^2/300 + 102^2/200 + 144/72.
  d = kernels(distributions.leaf_densities(tree(), 0.2, "erk", power=2))
  eps = 116.8 / (49 / 12 + 103**2 / 300 + 102**2 / 200 + 2)
  assert d["Dense_1"] == pytest.approx(eps * (103 / 300) ** 2, rel=1e-12)


def test_uniform_and_the_tree_structure():
  out = distributions.leaf_densities(tree(), 0.3, "uniform")
  assert out["Dense_0"]["bias"] is None
  assert jax.tree.structure(out, is_leaf=lambda x: x is None) == jax.tree.structure(
      tree(), is_leaf=lambda x: x is None)
  assert all(type(v) is float and v == 0.3 for v in jax.tree.leaves(out))
  # Shape-only leaves (ShapeDtypeStruct) serve as well as arrays; density 1 is dense.
  shapes = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in SHAPES.items()}
  assert distributions.leaf_densities(shapes, 0.2) == kernels(
      distributions.leaf_densities(tree(), 0.2))
  assert set(distributions.leaf_densities(shapes, 1.0).values()) == {1.0}


def test_overrides_and_dense_ends_are_outside_the_budget():
  # The first matching pattern wins; "*/kernel" matches every kernel, so all
  # are fixed and nothing is left to the budget.
  d = kernels(distributions.leaf_densities(
      tree(), 0.3, "uniform", overrides=[("Dense_1/*", 0.5), ("Conv*", 0.1), ("*/kernel", 0.9)]))
  assert d == {"Dense_0": 0.9, "Dense_1": 0.5, "Dense_2": 0.9, "Conv_0": 0.1}
  # Dense_1 fixed at 0.5, Conv_0 at 0.1: the budget 0.3 is over Dense_0 and
  # Dense_2 only, 0.3 * (12 + 200) = 63.6 kept.
  d = kernels(distributions.leaf_densities(
      tree(), 0.3, "erk", overrides={"Dense_1/kernel": 0.5, "Conv*": 0.1}))
  assert (d["Dense_1"], d["Conv_0"]) == (0.5, 0.1)
  # eps = 63.6 / (7 + 102); Dense_0 = eps * 7/12, Dense_2 = eps * 0.51.
  eps = 63.6 / 109
  assert d["Dense_0"] == pytest.approx(eps * 7 / 12, rel=1e-12)
  assert d["Dense_2"] == pytest.approx(eps * 0.51, rel=1e-12)
  assert d["Dense_0"] * 12 + d["Dense_2"] * 200 == pytest.approx(63.6, rel=1e-12)


def test_dense_first_and_last_follow_the_order():
  masks = {f"Dense_{i}": {"kernel": jnp.ones((10, 10), bool), "bias": None} for i in (0, 2, 10)}
  # Natural order Dense_0 < Dense_2 < Dense_10 (flatten order puts Dense_10 second).
  d = kernels_of(distributions.leaf_densities(masks, 0.2, "uniform", dense_first=True,
                                              dense_last=True))
  assert d == {"Dense_0": 1.0, "Dense_2": 0.2, "Dense_10": 1.0}
  order = ["Dense_10/kernel", "Dense_10/bias", "Dense_0/kernel", "Dense_2/kernel"]
  d = kernels_of(distributions.leaf_densities(masks, 0.2, "uniform", dense_first=True,
                                              order=order))
  assert d == {"Dense_0": 0.2, "Dense_2": 0.2, "Dense_10": 1.0}
  # dense_last wins over an override; the budget 0.2 holds over the other two.
  d = kernels_of(distributions.leaf_densities(masks, 0.2, "erk", dense_last=True,
                                              overrides=[("*", 0.5), ("Dense_0/*", 0.7)]))
  assert d == {"Dense_0": 0.5, "Dense_2": 0.5, "Dense_10": 1.0}
  d = kernels_of(distributions.leaf_densities(masks, 0.2, "erk", dense_first=True))
  assert d == pytest.approx({"Dense_0": 1.0, "Dense_2": 0.2, "Dense_10": 0.2}, rel=1e-12)


def kernels_of(d):
  return {name: leaf["kernel"] for name, leaf in d.items()}


def test_budget_report_rows_and_total():
  d = distributions.leaf_densities(tree(), 0.75)
  report = distributions.budget_report(tree(), d)
  assert set(report) == {"Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel",
                         "Conv_0/kernel", "total"}
  assert report["Dense_1/kernel"] == {"size": 300, "density": d["Dense_1"]["kernel"],
                                      "kept": 202}  # round(300 * 0.674725) = 202
  assert report["Conv_0/kernel"]["kept"] == 24  # round(72 * 0.327536) = round(23.58)
  assert report["total"] == {"size": 584, "kept": 12 + 202 + 200 + 24,
                             "density": 438 / 584}


@pytest.mark.parametrize("kwargs, match", [
    ({"density": 0.0}, "density"),
    ({"density": 1.5}, "density"),
    ({"density": True}, "density"),
    ({"distribution": "erdos"}, "distribution"),
    ({"power": -1.0}, "power"),
    ({"overrides": [("Nope/*", 0.5)]}, "Nope"),
    ({"overrides": [("Dense_0/*", 0.0)]}, "overrides"),
    ({"overrides": ["Dense_0/*"]}, "overrides"),
    ({"order": ["Dense_0/kernel"], "dense_first": True}, "order"),
    ({"order": ["Dense_9/kernel"], "dense_first": True}, "Dense_9"),
    ({"order": "Dense_0/kernel"}, "order"),
])
def test_bad_inputs_name_the_argument(kwargs, match):
  kwargs = {"density": 0.5, **kwargs}
  with pytest.raises(ValueError, match=match):
    distributions.leaf_densities(tree(), **kwargs)


def test_a_leaf_without_a_shape_is_a_type_error():
  with pytest.raises(TypeError, match="Dense_0"):
    distributions.leaf_densities({"Dense_0": 3.0}, 0.5)
