"""Filter scores and filter deletion for :class:`sparsejax.models.BasicCNN`.

**Scores** of the EEE 198 filter criteria (reference notes
``jax_ecosystem_and_annealing.md``, section 2.4), one per output filter of
every conv, from the kernels ``(kh, kw, in, out)``
(:mod:`sparsejax.pruning.saliency` has the formulas):

* ``magnitude``: the mean :math:`|w|` of the filter after training;
* ``magsign``: :math:`\\mathrm{sign}(\\bar w_{init}) \\cdot \\bar w_{final}` with
  :math:`\\bar w` the filter's *signed* mean weight (a structured "large
  final, same sign").

**Deletion** (section 2.5) builds the smaller dense BasicCNN of the kept
filters: each conv keeps ``W[:, :, kept_in, kept_out]`` and ``b[kept_out]``,
each BatchNorm its scale, offset, running mean and variance at the kept
channels, and the head the rows of the kept channels of the last conv
(row ``p C + c`` for position ``p`` and channel ``c`` of the ``(H, W, C)``
flatten). In evaluation mode the smaller network computes the masked one's
function (``tests/test_anneal_recipe.py``). :func:`count` gives parameters
and multiply-accumulates.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from sparsejax.models.basic_cnn import STRIDES

FILTER_CRITERIA = ("magnitude", "magsign")


def conv_names(params) -> list[str]:
  """``Conv_0 ... Conv_K`` in order."""
  return sorted((k for k in params if k.startswith("Conv_")), key=lambda k: int(k.split("_")[1]))


def filter_scores(criterion: str, trained, initial) -> dict[str, jnp.ndarray]:
  """``{conv: (out,)}`` scores of ``criterion`` (module docstring); larger is kept."""
  scores = {}
  for name in conv_names(trained):
    final, init = trained[name]["kernel"], initial[name]["kernel"]
    axes = tuple(range(final.ndim - 1))
    if criterion == "magnitude":
      scores[name] = jnp.mean(jnp.abs(final), axis=axes)
    elif criterion == "magsign":
      scores[name] = jnp.sign(jnp.mean(init, axis=axes)) * jnp.mean(final, axis=axes)
    else:
      raise ValueError(f"criterion must be one of {FILTER_CRITERIA}, got {criterion!r}")
  return scores


class Deleted(NamedTuple):
  """The smaller BasicCNN: its widths, parameters and BatchNorm statistics."""
  channels: tuple[int, ...]
  params: dict
  batch_stats: dict


def delete_filters(params, batch_stats, kept: Mapping[str, np.ndarray]) -> Deleted:
  """The dense BasicCNN of the ``kept`` filters (``{conv: bool[out]}``)."""
  params = {k: {n: np.asarray(v) for n, v in layer.items()} for k, layer in params.items()}
  stats = {k: {n: np.asarray(v) for n, v in layer.items()} for k, layer in batch_stats.items()}
  small_params, small_stats, channels, previous = {}, {}, [], None
  for i, name in enumerate(conv_names(params)):
    keep = np.asarray(kept[name], bool)
    kernel = params[name]["kernel"]
    if previous is not None:
      kernel = kernel[:, :, previous, :]
    small_params[name] = {"kernel": kernel[..., keep], "bias": params[name]["bias"][keep]}
    bn = f"BatchNorm_{i}"
    small_params[bn] = {k: v[keep] for k, v in params[bn].items()}
    small_stats[bn] = {k: v[keep] for k, v in stats[bn].items()}
    channels.append(int(keep.sum()))
    previous = keep
  head = params["Dense_0"]["kernel"]
  rows = head.reshape(-1, previous.size, head.shape[-1])[:, previous, :]
  small_params["Dense_0"] = {"kernel": rows.reshape(-1, head.shape[-1]),
                             "bias": params["Dense_0"]["bias"]}
  return Deleted(tuple(channels), small_params, small_stats)


def count(channels: Sequence[int], image_shape=(32, 32, 3), num_classes: int = 10
          ) -> dict[str, int]:
  """Parameters (BatchNorm scale and offset included) and MACs of a BasicCNN."""
  height, width, cin = image_shape
  params = macs = 0
  for cout, stride in zip(channels, STRIDES):
    height, width = (height - 3) // stride + 1, (width - 3) // stride + 1
    params += 9 * cin * cout + cout + 2 * cout
    macs += height * width * 9 * cin * cout
    cin = cout
  head = height * width * cin
  return {"params": params + head * num_classes + num_classes,
          "macs": macs + head * num_classes}
