"""Vision Transformers with gates on the attention and MLP outputs.

Dosovitskiy et al. (2021), "An image is worth 16x16 words: Transformers for
image recognition at scale", pre-norm encoder, as pruned by BMRS (Wright,
Igel & Selvan, NeurIPS 2024, "BMRS: Bayesian Model Reduction for Structured
Pruning"), which gates the output features of each attention and each MLP
sub-layer before its residual addition::

  Conv_0        patch embedding, kernel = stride = patch, hidden channels
  tokens        [cls; patches] + pos_embedding        (1 + HW / patch^2 tokens)
  Block_i, i < depth:
    h = LayerNorm_0(x)
    x = x + gate "Block_i/attn_out" (attn_out(MHSA(query(h), key(h), value(h))))
    h = LayerNorm_1(x)
    x = x + gate "Block_i/mlp_out" (mlp_out(gelu(mlp_in(h))))
  LayerNorm_0   final norm
  Dense_0       head on the class token

Parameters: ``cls`` (1, 1, hidden), ``pos_embedding`` (1, tokens, hidden), the
patch-embedding ``Conv_0``, per block the Dense layers ``query``, ``key``,
``value``, ``attn_out`` (hidden -> hidden each), ``mlp_in`` (hidden ->
mlp_dim), ``mlp_out`` (mlp_dim -> hidden) and ``LayerNorm_0``/``_1``, then
the final ``LayerNorm_0`` and the head ``Dense_0``. The number of position
embeddings is set by the input size at ``init``; the input side must be a
multiple of the patch size.

Gate sites, ``2 * depth`` of ``hidden`` units each: ``Block_i/attn_out`` and
``Block_i/mlp_out``, named after the producing Dense layer's path in the
``params`` tree. The activations there are ``(batch, tokens, hidden)``; one
gate per feature is shared across tokens. A ``(batch, hidden)`` gate is read
as per example, as on the other models. A site's units own its Dense kernel
columns (axis -1) and bias entries (axis 0); pruning them through
:func:`sparsejax.masks.unit_masks` equals a zero gate. The next layers'
inputs are not covered (the residual stream is shared).

* :func:`vit_b16`: ViT-B/16, 224x224 inputs, patch 16, hidden 768, depth 12,
  12 heads, MLP 3072: 197 tokens, 24 gate sites of 768 units and 86,567,656
  parameters with 1000 classes.
* :func:`vit_small_cifar`: a small ViT for 32x32 inputs, patch 4 (65
  tokens), hidden 192, depth 6, 3 heads of 64, MLP 384: 12 gate sites of 192
  units and 1,806,538 parameters with 10 classes.

Initialisation as the reference ViT: Dense kernels Xavier uniform, biases
normal(1e-6), position embeddings normal(0.02), class token zeros; LayerNorm
epsilon 1e-6 and the exact (erf) GELU. The reference zero-initialises the head
for fine-tuning; here the head uses the same Xavier init as the other Dense
layers, since the model is trained from scratch. **No pretrained weights** are
available offline: the paper fine-tunes an ImageNet-pretrained ViT-B/16,
whereas these are randomly initialised. No dropout (``train`` has no effect).
The model contract is described in :mod:`sparsejax.models.mlp`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models.conv import Conv
from sparsejax.models.mlp import Dtype, apply_gate, check_gates

LAYERNORM_EPSILON = 1e-6
DENSE_INIT = nn.initializers.xavier_uniform()
BIAS_INIT = nn.initializers.normal(stddev=1e-6)
POS_INIT = nn.initializers.normal(stddev=0.02)
#: The gated Dense layers of each encoder block.
GATED = ("attn_out", "mlp_out")


def _per_token(gate: Any) -> Any:
  """Reads a 2-D array gate ``(batch, hidden)`` as ``(batch, 1, hidden)``."""
  if callable(gate) or jnp.ndim(gate) != 2:
    return gate
  return jnp.asarray(gate)[:, None, :]


class EncoderBlock(nn.Module):
  """Pre-norm encoder block: gated self-attention and gated MLP, each residual.

  Attributes:
    heads: number of attention heads; must divide the input width.
    mlp_dim: hidden width of the MLP.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def _dense(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=DENSE_INIT, bias_init=BIAS_INIT,
                    dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, gates: Mapping[str, Any] | None,
               prefix: str) -> jax.Array:
    """Applies the block; the gates are looked up as ``f"{prefix}/attn_out"`` etc."""
    batch, tokens, hidden = x.shape
    head_dim = hidden // self.heads
    norm = dict(epsilon=LAYERNORM_EPSILON, dtype=self.dtype, param_dtype=self.param_dtype)

    h = nn.LayerNorm(name="LayerNorm_0", **norm)(x)
    q, k, v = (self._dense(hidden, name)(h).reshape(batch, tokens, self.heads, head_dim)
               for name in ("query", "key", "value"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    h = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, hidden)
    h = self._dense(hidden, "attn_out")(h)
    x = x + apply_gate(h, gates, f"{prefix}/attn_out")

    h = nn.LayerNorm(name="LayerNorm_1", **norm)(x)
    h = nn.gelu(self._dense(self.mlp_dim, "mlp_in")(h), approximate=False)
    h = self._dense(hidden, "mlp_out")(h)
    return x + apply_gate(h, gates, f"{prefix}/mlp_out")


class ViT(nn.Module):
  """Pre-norm Vision Transformer with a class token (module docstring).

  Attributes:
    num_classes: number of outputs.
    patch: patch side; kernel and stride of the patch embedding.
    hidden: token width.
    depth: number of encoder blocks.
    heads: attention heads per block; must divide ``hidden``.
    mlp_dim: hidden width of each block's MLP.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int = 10
  patch: int = 4
  hidden: int = 192
  depth: int = 6
  heads: int = 3
  mlp_dim: int = 384
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Block_i/attn_out": hidden, "Block_i/mlp_out": hidden}``, block by block."""
    return {f"Block_{i}/{name}": self.hidden for i in range(self.depth) for name in GATED}

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each feature's Dense kernel column (axis -1) and bias entry (axis 0)."""
    return {site: [(f"{site}/kernel", -1), (f"{site}/bias", 0)] for site in self.gate_sites()}

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    del train  # No BatchNorm or Dropout.
    check_gates(gates, self.gate_sites())
    if self.hidden % self.heads:
      raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
    if x.ndim != 4 or x.shape[1] % self.patch or x.shape[2] % self.patch:
      raise ValueError(
          f"ViT expects (batch, H, W, C) inputs with H and W multiples of the patch "
          f"size {self.patch}, got {tuple(x.shape)}")
    gates = {site: _per_token(g) for site, g in (gates or {}).items()}

    x = Conv(self.hidden, (self.patch, self.patch), strides=(self.patch, self.patch),
                padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype,
                name="Conv_0")(x)
    batch = x.shape[0]
    x = x.reshape(batch, -1, self.hidden)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.hidden)).astype(x.dtype), x],
                        axis=1)
    pos = self.param("pos_embedding", POS_INIT, (1, x.shape[1], self.hidden),
                     self.param_dtype)
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      name = f"Block_{i}"
      x = EncoderBlock(self.heads, self.mlp_dim, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=name)(x, gates, name)
    x = nn.LayerNorm(epsilon=LAYERNORM_EPSILON, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="LayerNorm_0")(x)
    return nn.Dense(self.num_classes, kernel_init=DENSE_INIT, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="Dense_0")(x[:, 0])


def vit_small_cifar(num_classes: int = 10, **kwargs) -> ViT:
  """A small ViT for 32x32 images: patch 4, hidden 192, depth 6, 3 heads, MLP 384.

  Args:
    num_classes: number of outputs.
    **kwargs: further :class:`ViT` fields (``dtype``, ``param_dtype``).
  """
  return ViT(num_classes=num_classes, patch=4, hidden=192, depth=6, heads=3,
             mlp_dim=384, **kwargs)


def vit_b16(num_classes: int = 1000, **kwargs) -> ViT:
  """ViT-B/16 for 224x224 images: hidden 768, depth 12, 12 heads, MLP 3072.

  Randomly initialised: no ImageNet-pretrained weights are available offline.

  Args:
    num_classes: number of outputs.
    **kwargs: further :class:`ViT` fields (``dtype``, ``param_dtype``).
  """
  return ViT(num_classes=num_classes, patch=16, hidden=768, depth=12, heads=12,
             mlp_dim=3072, **kwargs)
