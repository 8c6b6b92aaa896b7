"""A 2-D convolution whose gradients stay fast inside ``lax.scan`` on the CPU.

``flax.linen.Conv`` calls :func:`jax.lax.conv_general_dilated`, whose
transpose rules express the input and kernel gradients as convolutions with
swapped dimension labels (kernel ``01oi``; batch and feature axes
exchanged). Outside a loop XLA's CPU layout assignment inserts the
transposes that let its Eigen convolution run them; inside a ``while`` loop
(every ``lax.scan`` of train steps, as :mod:`sparsejax.train.loop` runs an
epoch) it does not, and the two gradient convolutions fall back to a naive
loop. Measured on the 2-core CPU while training jobs loaded it (so the
ratios, not the times, are the point) for the second LeNet-5 convolution
(batch 100, 12x12x20 -> 8x8x50, per iteration of a 20-step scan): input
gradient 134 ms in the loop against 12 ms unrolled, kernel gradient 315 ms
against 8 ms; a LeNet-5-Caffe train step 611 ms in a scan against 74 ms
alone, and 67 ms in a scan with this convolution (the open report
jax-ml/jax#12868 is the same effect).

:func:`conv_general_dilated` is a drop-in replacement (``nn.Conv(...,
conv_general_dilated=conv_general_dilated)``) with a custom VJP that writes
both gradients as ordinary ``NHWC`` / ``HWIO`` convolutions of explicitly
transposed operands. For an input :math:`x` (``N, H, W, I``), a kernel
:math:`w` (``kh, kw, I, O``), strides :math:`s` and padding
:math:`(p^-, p^+)` per spatial axis, with :math:`g = \\partial L / \\partial y`:

* input gradient: :math:`\\partial L/\\partial x = \\mathrm{conv}(g
  \\uparrow_s, \\tilde w)`, the output gradient dilated by the strides,
  convolved with the kernel flipped in space and with ``I`` and ``O``
  exchanged (:math:`\\tilde w_{a,b,o,i} = w_{kh-1-a, kw-1-b, i, o}`) under
  padding :math:`(k - 1 - p^-,\\; n - 1 - (m - 1) s + p^-)` (input size
  :math:`n`, output size :math:`m`);
* kernel gradient: :math:`\\partial L/\\partial w_{a,b,i,o} = \\sum_{n,u,v}
  x^{pad}_{n, us + a, vs + b, i}\\, g_{n,u,v,o}`, a convolution of
  :math:`x^{pad}` read as ``(I, H, W, N)`` with :math:`g` read as a
  ``(m_h, m_w, N, O)`` kernel dilated by :math:`s`, cut to ``kh x kw``.

Both equal JAX's own gradients (``tests/test_conv.py``, every padding and
stride the models use). Other cases (input or kernel dilation, feature
groups, other dimension orders) go to :func:`jax.lax.conv_general_dilated`
unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

#: The layout of every sparsejax model: NHWC inputs, HWIO kernels.
LAYOUT = ("NHWC", "HWIO", "NHWC")


def _explicit_padding(lhs_shape, rhs_shape, strides, padding) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _is_plain(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
              padding) -> bool:
  if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  if isinstance(padding, str) and padding not in ("SAME", "VALID", "SAME_LOWER"):
    return False
  ours = lax.conv_dimension_numbers(lhs.shape, rhs.shape, LAYOUT)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or LAYOUT) == ours


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None, preferred_element_type: Any = None) -> jax.Array:
  """:func:`jax.lax.conv_general_dilated` with loop-friendly gradients (module docstring)."""
  if batch_group_count != 1 or preferred_element_type is not None or not _is_plain(
      lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, padding):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  strides = tuple(int(s) for s in window_strides)
  pads = _explicit_padding(lhs.shape, rhs.shape, strides, padding)
  return _conv(lhs, rhs, strides, pads, precision)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=LAYOUT,
                                  precision=precision)


def _conv_fwd(x, w, strides, pads, precision):
  return _conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, residuals, g):
  x, w = residuals
  return (_input_gradient(g, w, x.shape, strides, pads, precision),
          _kernel_gradient(g, x, w.shape, strides, pads, precision))


_conv.defvjp(_conv_fwd, _conv_bwd)


def _input_gradient(g, w, x_shape, strides, pads, precision):
  """``dL/dx``: the strided-dilated ``g`` convolved with the flipped, I/O-swapped kernel."""
  flipped = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
  padding = [(k - 1 - lo, n - 1 - (m - 1) * s + lo)
             for k, n, m, s, (lo, _) in zip(w.shape[:2], x_shape[1:3], g.shape[1:3], strides, pads)]
  return lax.conv_general_dilated(g, flipped, (1, 1), padding, lhs_dilation=strides,
                                  dimension_numbers=LAYOUT, precision=precision)


def _kernel_gradient(g, x, w_shape, strides, pads, precision):
  """``dL/dw``: ``x`` read as (I, H, W, N) convolved with ``g`` read as a dilated kernel."""
  inputs = jnp.transpose(x, (3, 1, 2, 0))    # (I, H, W, N)
  kernel = jnp.transpose(g, (1, 2, 0, 3))    # (m_h, m_w, N, O)
  out = lax.conv_general_dilated(inputs, kernel, (1, 1), pads, rhs_dilation=strides,
                                 dimension_numbers=LAYOUT, precision=precision)
  return jnp.transpose(out[:, :w_shape[0], :w_shape[1], :], (1, 2, 0, 3))


#: ``flax.linen.Conv`` with :func:`conv_general_dilated`: what every sparsejax model uses.
Conv = partial(nn.Conv, conv_general_dilated=conv_general_dilated)
