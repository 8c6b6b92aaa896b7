"""The loop-friendly convolution: JAX's values and gradients, fast inside a scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sparsejax.models.conv import LAYOUT, conv_general_dilated

# (input HxW, kernel, strides, padding): LeNet-5 (VALID), VGG (SAME), the ResNet
# stem (7x7 / 2, pad 3), its strided 3x3 and 1x1 shortcuts, ViT's patches, odd sizes.
CASES = [
    pytest.param((12, 12), (5, 5), (1, 1), "VALID", marks=pytest.mark.slow),
    pytest.param((8, 8), (3, 3), (1, 1), "SAME", marks=pytest.mark.slow),
    ((16, 16), (7, 7), (2, 2), ((3, 3), (3, 3))),
    ((9, 9), (3, 3), (2, 2), "SAME"),
    ((8, 8), (1, 1), (2, 2), "VALID"),
    ((8, 8), (4, 4), (4, 4), "VALID"),
    ((7, 10), (3, 2), (2, 3), ((1, 0), (2, 1))),
]


@pytest.mark.parametrize("size, kernel, strides, padding", CASES)
def test_values_and_gradients_equal_jax(size, kernel, strides, padding):
  with jax.enable_x64():
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, *size, 4), jnp.float64)
    w = jax.random.normal(kw, (*kernel, 4, 5), jnp.float64)

    def ours(x, w):
      return conv_general_dilated(x, w, strides, padding, dimension_numbers=LAYOUT)

    def theirs(x, w):
      return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=LAYOUT)

    y, vjp = jax.vjp(ours, x, w)
    y_ref, vjp_ref = jax.vjp(theirs, x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    g = jax.random.normal(kg, y.shape, jnp.float64)
    for got, want in zip(vjp(g), vjp_ref(g)):
      assert got.shape == want.shape
      np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_vmapped_gradients_agree_with_jax():
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(1), (2, 3, 6, 6, 2), jnp.float64)
    w = jax.random.normal(jax.random.key(2), (2, 3, 3, 2, 3), jnp.float64)

    def grads(conv):
      def loss(x, w):
        return jnp.sum(jnp.tanh(conv(x, w, (1, 1), "SAME", dimension_numbers=LAYOUT)) ** 2)
      return jax.vmap(jax.grad(loss, argnums=(0, 1)))(x, w)

    for got, want in zip(grads(conv_general_dilated), grads(lax.conv_general_dilated)):
      np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_other_cases_are_passed_to_lax():
  x = jnp.ones((1, 6, 6, 4))
  w = jnp.ones((3, 3, 2, 4))
  grouped = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=LAYOUT,
                                 feature_group_count=2)
  np.testing.assert_array_equal(
      grouped, lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=LAYOUT,
                                        feature_group_count=2))


def test_gradients_inside_a_scan_compile_to_plain_convolutions():
  """The loop body holds no convolution with swapped kernel labels (the slow path)."""
  x = jnp.ones((4, 12, 12, 20))
  w = jnp.ones((5, 5, 20, 50))

  def body(w, _):
    grad = jax.grad(lambda w: jnp.sum(conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=LAYOUT) ** 2))(w)
    return w - 1e-3 * grad, None

  text = jax.jit(lambda w: lax.scan(body, w, None, length=3)[0]).lower(w).compile().as_text()
  labels = [line.split("dim_labels=")[1].split(",")[0] for line in text.splitlines()
            if " convolution(" in line]
  assert labels and all(label == "b01f_01io->b01f" for label in labels), labels
