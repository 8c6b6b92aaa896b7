"""Gate sites of any model, found by tracing, and gates attached from outside.

A *site* is a group of units that a unit-level method (BMRS's log-uniform
gates, L0's hard-concrete gates, structured masks) scales or removes. By
default the sites are the outputs of every Dense and Conv layer but the head
(the last one the forward pass calls), addressed by module path
(``"Dense_0"``, ``"block1/Conv_0"``). Where a BatchNorm directly follows the
layer, its gate acts on the BatchNorm's output: a gate before a
normalisation would be normalised away. A site ``"path:input"`` gates the
inputs of that layer instead: a gate after the previous layer's
nonlinearity (BMRS gates a tanh MLP there), or L0's per-example gates on a
Dense layer's input features; ``"path:output"`` gates the layer's output as
the layer gives it (L0's per-example gates on a Conv layer's channels, the
same as gating its kernel and bias). Any traced layer may be addressed so
(:meth:`sparsejax.models.ModelAdapter.site`); the default sites are the
model's *units*.

For a ReLU, and for max pooling, a positive gate commutes with the
nonlinearity (:math:`\\mathrm{relu}(\\theta x) = \\theta\\,\\mathrm{relu}(x)`
for :math:`\\theta > 0`), so gating a layer's output equals gating after its
activation; for tanh or sigmoid it does not, and ``"next:input"`` is the
site that reproduces the reference.

Linen layers are intercepted with ``flax.linen.intercept_methods``; NNX
layers by swapping the class of the merged module's layer objects for the
duration of one call (:func:`nnx_gates`). A gate that the forward pass never
applies is an error (:func:`check_reached`): a skipped site would train its
gates on the penalty alone.

A unit's weights (its *cover*, for :func:`sparsejax.masks.unit_masks`): its
kernel column (axis -1) and bias entry, and the following BatchNorm's scale
and bias; for an input site, the layer's kernel rows (axis -2).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
from flax import nnx

from sparsejax import masks as masks_lib
from sparsejax.models.mlp import apply_gate

#: Positions of a gate relative to its module.
OUTPUT, INPUT, DECLARED = "output", "input", "declared"
#: The suffixes of a site name that address a layer's inputs, or its output as it is
#: (before a following BatchNorm, where a plain ``"path"`` site moves).
SUFFIXES = (INPUT, OUTPUT)


class Site(NamedTuple):
  """A gate site.

  Attributes:
    name: the site's name: the layer's module path, ``path:input`` for an
      input site.
    module: the path of the module whose output (or input) the gate scales
      (the following BatchNorm's, for an output site with one).
    position: ``"output"``, ``"input"``, or ``"declared"`` (the model gates
      itself).
    size: the number of units (the activations' last axis).
    covers: ``((params leaf path, unit axis), ...)``.
  """
  name: str
  module: str
  position: str
  size: int
  covers: tuple[tuple[str, int], ...]


class Call(NamedTuple):
  """One call of a layer in a traced forward pass."""
  path: str
  kind: str  # "dense", "conv", "norm"
  input_id: int
  output_id: int
  input_size: int
  output_size: int


def _linen_kind(module) -> str | None:
  if isinstance(module, nn.Dense):
    return "dense"
  if isinstance(module, (nn.Conv, nn.ConvTranspose)):
    return "conv"
  if isinstance(module, nn.BatchNorm):
    return "norm"
  return None


def _nnx_kind(module) -> str | None:
  if isinstance(module, nnx.Linear):
    return "dense"
  if isinstance(module, (nnx.Conv, nnx.ConvTranspose)):
    return "conv"
  if isinstance(module, nnx.BatchNorm):
    return "norm"
  return None


def _record(calls: list, path: str, kind: str, x, y) -> None:
  calls.append(Call(path, kind, id(x), id(y), x.shape[-1], y.shape[-1]))


@contextlib.contextmanager
def linen_recorder():
  """Records every Dense / Conv / BatchNorm call of a linen forward pass, in order."""
  calls: list[Call] = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    kind = _linen_kind(context.module)
    if context.method_name == "__call__" and kind and args:
      _record(calls, "/".join(context.module.path), kind, args[0], out)
    return out
  with nn.intercept_methods(interceptor):
    yield calls


@contextlib.contextmanager
def linen_gates(units: Mapping[str, Site], gates: Mapping[str, Any]):
  """Applies ``gates`` at their sites during a linen call; yields the set of sites reached."""
  by_module = _by_module(units, gates)
  reached: set[str] = set()

  def interceptor(next_fun, args, kwargs, context):
    entries = by_module.get("/".join(context.module.path)) if context.method_name == "__call__" \
        else None
    if not entries:
      return next_fun(*args, **kwargs)
    return _gated_call(next_fun, args, kwargs, entries, gates, reached)
  with nn.intercept_methods(interceptor):
    yield reached


def _by_module(units: Mapping[str, Site], gates: Mapping[str, Any]) -> dict[str, list[Site]]:
  by_module: dict[str, list[Site]] = {}
  for name in gates:
    by_module.setdefault(units[name].module, []).append(units[name])
  return by_module


def _gated_call(next_fun, args, kwargs, entries: Sequence[Site], gates, reached: set):
  args = list(args)
  for site in entries:
    if site.position == INPUT:
      args[0] = apply_gate(args[0], gates, site.name)
      reached.add(site.name)
  out = next_fun(*args, **kwargs)
  for site in entries:
    if site.position == OUTPUT:
      out = apply_gate(out, gates, site.name)
      reached.add(site.name)
  return out


def _nnx_layers(module) -> dict[str, Any]:
  return {"/".join(map(str, path)): layer for path, layer in nnx.iter_modules(module)
          if path and _nnx_kind(layer)}


@contextlib.contextmanager
def _swapped_calls(layers: Mapping[str, Any], make_call):
  """Gives each NNX layer object a one-off subclass whose ``__call__`` is ``make_call(path,
  original_call)``, and restores the classes on exit."""
  originals = {}
  try:
    for path, layer in layers.items():
      cls = type(layer)
      originals[path] = cls
      layer.__class__ = type(cls.__name__, (cls,), {"__call__": make_call(path, cls.__call__)})
    yield
  finally:
    for path, cls in originals.items():
      layers[path].__class__ = cls


@contextlib.contextmanager
def nnx_recorder(module):
  """Records every Linear / Conv / BatchNorm call of an NNX forward pass, in order."""
  calls: list[Call] = []
  layers = _nnx_layers(module)

  def make_call(path, original):
    def call(self, x, *args, **kwargs):
      out = original(self, x, *args, **kwargs)
      _record(calls, path, _nnx_kind(self), x, out)
      return out
    return call
  with _swapped_calls(layers, make_call):
    yield calls


@contextlib.contextmanager
def nnx_gates(module, units: Mapping[str, Site], gates: Mapping[str, Any]):
  """Applies ``gates`` at their sites during an NNX call; yields the set of sites reached."""
  by_module = _by_module(units, gates)
  layers = {path: layer for path, layer in _nnx_layers(module).items() if path in by_module}
  reached: set[str] = set()

  def make_call(path, original):
    def call(self, *args, **kwargs):
      return _gated_call(lambda *a, **k: original(self, *a, **k), args, kwargs,
                         by_module[path], gates, reached)
    return call
  with _swapped_calls(layers, make_call):
    yield reached


def check_reached(gates: Mapping[str, Any], reached: set) -> None:
  """Raises ``ValueError`` naming every gated site the forward pass did not reach."""
  missed = [name for name in gates if name not in reached]
  if missed:
    raise ValueError(f"gate site(s) {missed} were never reached by the model's forward pass "
                     "(the layer was not called); their gates would train on the penalty alone")


def layer_calls(calls: Sequence[Call]) -> dict[str, Call]:
  """``{path: first call}`` of the Dense and Conv layers, in call order."""
  layers: dict[str, Call] = {}
  for call in calls:
    if call.kind in ("dense", "conv"):
      layers.setdefault(call.path, call)
  return layers


def find_sites(calls: Sequence[Call], params_shape, spec: Sequence[str] | None = None
               ) -> dict[str, Site]:
  """The gate sites of a traced forward pass (module docstring).

  Args:
    calls: the layer calls, in order (:func:`linen_recorder`, :func:`nnx_recorder`).
    params_shape: the parameters (or their shapes), to find each unit's weights.
    spec: ``None`` (every Dense / Conv output but the head's) or the sites by
      module path: ``"path"`` (its output, past a following BatchNorm),
      ``"path:input"`` or ``"path:output"`` (its output as it is).

  Raises:
    ValueError: a site in ``spec`` names no Dense / Conv layer that the
      forward pass calls.
  """
  layers = layer_calls(calls)
  if spec is None:
    heads = [c.path for c in calls if c.kind in ("dense", "conv")][-1:]
    spec = [path for path in layers if path not in heads]
  leaves = {masks_lib.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params_shape)[0]}
  return {entry: layer_site(entry, calls, leaves) for entry in spec}


def layer_site(entry: str, calls: Sequence[Call], leaves) -> Site:
  """The site ``entry`` (``"path"``, ``"path:input"`` or ``"path:output"``) of a traced pass.

  Raises:
    ValueError: it names no Dense / Conv layer that the forward pass calls.
  """
  layers = layer_calls(calls)
  path, _, position = entry.partition(":")
  if path not in layers or position not in ("", *SUFFIXES):
    raise ValueError(f"gate site {entry!r} names no Dense or Conv layer of the model's forward "
                     f"pass; its layers: {list(layers)} (add ':input' to gate a layer's inputs, "
                     "':output' for its output before a following BatchNorm)")
  call = layers[path]
  if position == INPUT:
    return Site(entry, path, INPUT, call.input_size, _existing([(f"{path}/kernel", -2)], leaves))
  module, covers = path, [(f"{path}/kernel", -1), (f"{path}/bias", 0)]
  follower = None if position == OUTPUT else _following_norm(calls, call)
  if follower is not None:
    module = follower.path
    covers += [(f"{follower.path}/scale", 0), (f"{follower.path}/bias", 0)]
  return Site(entry, module, OUTPUT, call.output_size, _existing(covers, leaves))


def _following_norm(calls: Sequence[Call], call: Call) -> Call | None:
  """The BatchNorm call that takes ``call``'s output as it is, if any."""
  for other in calls:
    if other.kind == "norm" and other.input_id == call.output_id:
      return other
  return None


def _existing(covers, leaves) -> tuple[tuple[str, int], ...]:
  return tuple((path, axis) for path, axis in covers if path in leaves)


def declared_sites(module) -> dict[str, Site]:
  """The sites of a model that gates itself (``gate_sites()``, ``unit_covers()``)."""
  covers = module.unit_covers()
  return {name: Site(name, name, DECLARED, size, tuple(covers.get(name, ())))
          for name, size in module.gate_sites().items()}
