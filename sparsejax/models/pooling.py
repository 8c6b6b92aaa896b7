"""Max pooling whose gradient stays element-wise on the CPU.

``flax.linen.max_pool`` is a ``reduce_window`` whose gradient is a
``select_and_scatter``. XLA's CPU backend expands that into a variadic
``reduce_window`` carrying the arg-max index along every axis (four ``s32``
iotas the size of the input), a concatenation of those indices and a
``scatter``. Profiled on the 2-core CPU (``jax.profiler``, LeNet-5-Caffe,
batch 100): those ops of the first pooling layer's gradient took about 16 ms
of the 32 ms that all the step's ops took.

When the windows tile the input exactly (window = stride, ``VALID``, every
spatial size a multiple of the window: every pooling of LeNet-5 and VGG),
:func:`max_pool` reshapes ``(N, H, W, C)`` to ``(N, H/k, k, W/l, l, C)`` and
takes the maximum over the two window axes. Its value is the same; its
gradient is JAX's rule for a maximum, an element-wise mask ``x == max``
times the output gradient, which XLA fuses with its neighbours. The two
gradients differ only on ties inside a window: ``select_and_scatter`` sends
the whole gradient to the first maximal element, the reduction splits it
evenly among them. After a ReLU, ties are windows of zeros, where the ReLU's
gradient is zero either way. Other windows (overlapping, padded) go to
``flax.linen.max_pool``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def tiles_exactly(shape: Sequence[int], window: Sequence[int], strides: Sequence[int],
                  padding) -> bool:
  """Whether ``window`` tiles the spatial axes of an ``(N, *spatial, C)`` input of ``shape``."""
  spatial = tuple(shape[1:-1])
  return (padding == "VALID" and tuple(window) == tuple(strides)
          and len(window) == len(spatial)
          and all(size % k == 0 for size, k in zip(spatial, window)))


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding="VALID") -> jax.Array:
  """``flax.linen.max_pool(x, window, strides, padding)``, reshaped when the windows tile ``x``.

  Args:
    x: ``(N, *spatial, C)`` inputs.
    window: the window size per spatial axis.
    strides: the strides (default: ``window``).
    padding: ``"VALID"``, ``"SAME"`` or explicit pairs, as Flax takes them.

  Returns:
    The pooled ``(N, *spatial // window, C)`` array (module docstring).
  """
  window = tuple(window)
  strides = window if strides is None else tuple(strides)
  if not tiles_exactly(x.shape, window, strides, padding):
    return nn.max_pool(x, window, strides=strides, padding=padding)
  blocks = [x.shape[0]]
  for size, k in zip(x.shape[1:-1], window):
    blocks += [size // k, k]
  window_axes = tuple(range(2, 2 * len(window) + 1, 2))
  return jnp.max(x.reshape(*blocks, x.shape[-1]), axis=window_axes)
