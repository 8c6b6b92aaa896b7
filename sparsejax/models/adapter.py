"""The one model contract: any Flax linen or NNX module as pure ``init`` / ``apply``.

:func:`adapt` wraps a model the user wrote, whatever its call signature, and
gives everything sparsejax needs of it:

* ``init(key, x) -> (params, model_state)`` and
  ``apply(params, model_state, x, *, train, gates=None, key=None) ->
  (outputs, model_state)``: pure functions over plain pytrees. ``params`` is
  the ``params`` collection (NNX: every ``nnx.Param``) as nested dicts,
  ``model_state`` the other variables (``batch_stats``; NNX: ``nnx.BatchStat``
  and the other non-parameter variables, the RNG streams aside). In train mode
  the mutable collections are updated and ``key`` feeds the ``dropout`` stream.
* the train flag, found from the ``__call__`` signature or the module's
  fields: ``train`` / ``training`` / ``is_training`` (``True`` in train
  mode), ``deterministic`` / ``use_running_average`` (inverted), or none;
  NNX modules switch with ``set_attributes(deterministic=...,
  use_running_average=...)``, as ``nnx.Module.train()`` does.
* the prunable leaves (:attr:`ModelAdapter.prunable`, kernels by default);
* the units (:meth:`ModelAdapter.gate_sites`, :meth:`ModelAdapter.unit_covers`)
  and the gates attached to them from outside the model
  (:mod:`sparsejax.models.sites`): no model is written for a method.
* :attr:`ModelAdapter.capabilities`, what methods may ask of it
  (:mod:`sparsejax.models.capabilities`).

Models that implement sparsejax's gate protocol themselves (the zoo:
``__call__(x, *, train, gates)``, ``gate_sites()``, ``unit_covers()``; see
:mod:`sparsejax.models.mlp`) are adapted the same way; the adapter hands
them their gates instead of intercepting their layers, so the gates sit
exactly where the reference puts them (after the nonlinearity, or on the
pooled features of LeNet-5's last convolution).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from sparsejax import masks as masks_lib
from sparsejax.models import capabilities as caps
from sparsejax.models import sites as sites_lib
from sparsejax.models.mlp import INPUT_SITE

#: Call arguments and fields that carry the train flag, and whether they mean "train".
TRAIN_FLAGS = {"train": True, "training": True, "is_training": True,
               "deterministic": False, "use_running_average": False}


@dataclasses.dataclass(frozen=True, eq=False)
class ModelAdapter:
  """A model as sparsejax uses it (module docstring). Build it with :func:`adapt`.

  Attributes:
    module: the wrapped linen module, or the NNX module (or constructor).
    kind: ``"linen"`` or ``"nnx"``.
    units: ``{site: Site}``, the gate sites in network order (empty if none).
    prunable: which ``params`` leaves get a mask.
    capabilities: what the model offers (:mod:`sparsejax.models.capabilities`).
    native_gates: the module takes ``gates`` itself (the zoo's protocol).
    input_shape: one example's input shape (no batch axis).
    param_shapes: the parameters as ``jax.ShapeDtypeStruct`` leaves.
  """
  module: Any
  kind: str
  input_shape: tuple[int, ...]
  param_shapes: Any
  units: Mapping[str, sites_lib.Site]
  prunable: masks_lib.PrunablePredicate
  capabilities: frozenset
  native_gates: bool
  _init: Callable = dataclasses.field(repr=False)
  _apply: Callable = dataclasses.field(repr=False)
  _calls: tuple = dataclasses.field(repr=False, default=())
  _leaves: frozenset = dataclasses.field(repr=False, default=frozenset())

  def init(self, key: jax.Array, x: jax.Array) -> tuple[Any, dict]:
    """``(params, model_state)`` for a batch ``x`` (only its shape and dtype matter)."""
    return self._init(key, x)

  def apply(self, params, model_state, x, *, train: bool, gates=None,
            key: jax.Array | None = None) -> tuple[Any, dict]:
    """Runs the model; returns ``(outputs, new_model_state)``.

    Args:
      params: the parameters.
      model_state: the other variables (``{}`` if none).
      x: a batch of inputs.
      train: train mode (batch statistics, dropout on, state updated).
      gates: ``None`` or ``{site: gate}``; a gate is an array broadcastable to
        the site's activations (``(units,)``, ``(batch, units)``) or a function
        ``activations -> gated activations``. The reserved site ``"input"``
        (a function) gates ``x`` before the model.
      key: the ``dropout`` stream's key in train mode.

    Raises:
      ValueError: ``gates`` names a site the model does not have, or one the
        forward pass never reached.
    """
    if gates and INPUT_SITE in gates:
      gates = dict(gates)
      x = gates.pop(INPUT_SITE)(x)
    sites = {name: self.site(name) for name in gates} if gates else {}
    return self._apply(params, model_state, x, train, gates or None, key, sites)

  def site(self, name: str) -> sites_lib.Site:
    """The gate site ``name``: one of :attr:`units`, or any traced Dense / Conv layer's
    ``"path"``, ``"path:input"`` or ``"path:output"``.

    Raises:
      ValueError: the model has no such site.
    """
    if name in self.units:
      return self.units[name]
    if self.native_gates:
      raise ValueError(f"unknown gate site {name!r}; this model's gate sites: "
                       f"{list(self.units)}")
    try:
      return sites_lib.layer_site(name, self._calls, self._leaves)
    except ValueError as error:
      raise ValueError(f"unknown gate site {name!r}; this model's units: {list(self.units)}; "
                       f"{error}") from None

  def layer_order(self) -> list[str]:
    """The Dense / Conv layers' module paths in the order the forward pass calls them
    (empty for a model that gates itself: it is not traced)."""
    order: list[str] = []
    for call in self._calls:
      if call.kind in ("dense", "conv") and call.path not in order:
        order.append(call.path)
    return order

  def gate_sites(self) -> dict[str, int]:
    """``{site: number of units}``, in network order."""
    return {name: site.size for name, site in self.units.items()}

  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """``{site: [(params leaf path, unit axis), ...]}``: the weights each unit owns
    (:func:`sparsejax.masks.unit_masks`)."""
    return {name: list(site.covers) for name, site in self.units.items()}

  def require(self, capability: str, family: str) -> None:
    """Raises :class:`~sparsejax.models.capabilities.CapabilityError` unless the model
    has ``capability`` (naming it, what it means and ``family``)."""
    caps.require(self.capabilities, capability, family)

  def __getattr__(self, name):
    # Model fields (``activation``, ``widths``, ``dtype``) read through to the module.
    if name.startswith("_") or name in {f.name for f in dataclasses.fields(self)}:
      raise AttributeError(name)
    return getattr(self.module, name)


def adapt(module, sample_input, *, sites: Sequence[str] | None = None,
          prunable: masks_lib.PrunablePredicate | Sequence[str] | None = None,
          rng_streams: Sequence[str] = ("dropout",),
          capabilities: Sequence[str] = ()) -> ModelAdapter:
  """Wraps any Flax model in the sparsejax model contract.

  Args:
    module: a linen module (any ``__call__`` signature), an ``nnx.Module``
      instance (its own weights are the initial ones, for every key), an
      ``nnx.Module`` class or a constructor ``rngs -> nnx.Module`` (each key
      initialises anew).
    sample_input: a batch of inputs, or its ``jax.ShapeDtypeStruct``; only
      shapes matter (the units are found by tracing, without compute).
    sites: the gate sites, by module path: ``"path"`` gates the outputs of that
      Dense / Conv layer (after the BatchNorm that follows it, if one does),
      ``"path:input"`` the inputs of that layer (a gate after the previous
      layer's nonlinearity). Default: the outputs of every Dense and Conv
      layer but the last one called (the head). Ignored for models that take
      their own ``gates``.
    prunable: a predicate ``(path, leaf) -> bool`` or path patterns
      (:func:`sparsejax.masks.prunable_paths`); default kernels only.
    rng_streams: the rng streams the model draws in train mode (linen).
    capabilities: capabilities the model declares beyond those found
      (:data:`sparsejax.models.capabilities.CAPABILITIES`).

  Raises:
    ValueError: a site names no layer of the model, or ``module`` is neither
      a linen nor an NNX module.
  """
  sample = jax.ShapeDtypeStruct(jnp.shape(sample_input), jnp.result_type(sample_input))
  predicate = _prunable_predicate(prunable)
  if isinstance(module, nn.Module):
    backend = _LinenBackend(module, tuple(rng_streams))
  elif isinstance(module, nnx.Module) or callable(module):
    backend = _NnxBackend(module)
  else:
    raise ValueError(f"adapt() takes a flax linen module, an nnx.Module or a constructor "
                     f"rngs -> nnx.Module; got {type(module).__name__}")
  # The key is made inside the traced function: nothing here may start a JAX backend
  # (jax.distributed.initialize must come first in a multi-process run).
  params_shape, state_shape = jax.eval_shape(lambda x: backend.init(jax.random.key(0), x), sample)
  calls = () if backend.native_gates else tuple(
      backend.trace_calls(params_shape, state_shape, sample))
  units = (sites_lib.declared_sites(backend.module) if backend.native_gates
           else sites_lib.find_sites(calls, params_shape, sites))
  declared = caps.check_names(capabilities)
  found = caps.found(units, state_shape, layer_gates=not backend.native_gates)
  leaves = frozenset(masks_lib.path_str(p) for p, _ in
                     jax.tree_util.tree_flatten_with_path(params_shape)[0])
  return ModelAdapter(module=backend.module, kind=backend.kind, input_shape=tuple(sample.shape[1:]),
                      param_shapes=params_shape, units=units, prunable=predicate,
                      capabilities=found | declared, native_gates=backend.native_gates,
                      _init=backend.init, _apply=backend.apply, _calls=calls, _leaves=leaves)


def as_adapter(model, sample_input) -> ModelAdapter:
  """``model`` if it is a :class:`ModelAdapter`, else ``adapt(model, sample_input)``."""
  return model if isinstance(model, ModelAdapter) else adapt(model, sample_input)


def _prunable_predicate(prunable) -> masks_lib.PrunablePredicate:
  if prunable is None:
    return masks_lib.kernels_only
  if callable(prunable):
    return prunable
  return masks_lib.prunable_paths(*prunable)


# --------------------------------------------------------------------------
# Linen


def _train_flag(module: nn.Module) -> tuple[str | None, str | None]:
  """``(call argument, module field)`` that carries the train flag (either may be None)."""
  parameters = inspect.signature(type(module).__call__).parameters
  for name in TRAIN_FLAGS:
    if name in parameters:
      return name, None
  fields = {f.name for f in dataclasses.fields(module)}
  for name in TRAIN_FLAGS:
    if name in fields:
      return None, name
  return None, None


def _flag_value(name: str, train: bool) -> bool:
  return train if TRAIN_FLAGS[name] else not train


class _LinenBackend:
  kind = "linen"

  def __init__(self, module: nn.Module, rng_streams: tuple[str, ...]):
    self.module = module
    self.rng_streams = rng_streams
    self.argument, self.field = _train_flag(module)
    call = inspect.signature(type(module).__call__).parameters
    self.native_gates = ("gates" in call and hasattr(module, "gate_sites")
                         and hasattr(module, "unit_covers"))
    # The train and eval versions of a module whose flag is a field.
    self.modules = {train: (module.clone(**{self.field: _flag_value(self.field, train)})
                            if self.field else module) for train in (True, False)}

  def _call(self, train: bool, variables, x, gates, rngs, mutable):
    kwargs = {self.argument: _flag_value(self.argument, train)} if self.argument else {}
    if self.native_gates:
      kwargs["gates"] = gates
    module = self.modules[train]
    if mutable:
      return module.apply(variables, x, rngs=rngs, mutable=mutable, **kwargs)
    return module.apply(variables, x, rngs=rngs, **kwargs)

  def init(self, key, x):
    kwargs = {self.argument: _flag_value(self.argument, False)} if self.argument else {}
    rngs = {"params": key, **self._stream_keys(jax.random.fold_in(key, 1))}
    variables = dict(self.modules[False].init(rngs, x, **kwargs))
    params = variables.pop("params", {})
    return params, variables

  def _stream_keys(self, key) -> dict:
    """One key per rng stream (the key itself for a single stream)."""
    if len(self.rng_streams) == 1:
      return {self.rng_streams[0]: key}
    return dict(zip(self.rng_streams, jax.random.split(key, len(self.rng_streams))))

  def apply(self, params, model_state, x, train, gates, key, sites):
    variables = {"params": params, **model_state}
    rngs = None if key is None or not self.rng_streams else self._stream_keys(key)
    mutable = list(model_state) if train and model_state else False
    if self.native_gates or not gates:
      result = self._call(train, variables, x, gates, rngs, mutable)
    else:
      with sites_lib.linen_gates(sites, gates) as reached:
        result = self._call(train, variables, x, None, rngs, mutable)
      sites_lib.check_reached(gates, reached)
    if mutable:
      outputs, new_state = result
      return outputs, dict(new_state)
    return result, model_state

  def trace_calls(self, params_shape, state_shape, sample) -> list[sites_lib.Call]:
    def forward(params, state, x):
      with sites_lib.linen_recorder() as calls:
        self._call(False, {"params": params, **state}, x, None, None, False)
      return calls
    box = []
    jax.eval_shape(lambda p, s, x: box.append(forward(p, s, x)), params_shape, state_shape, sample)
    return box[0]


# --------------------------------------------------------------------------
# NNX


def _concrete_stream(value):
  """An RNG stream's key or count, made concrete where it is only a shape (a constructor's
  module is built under ``nnx.eval_shape``): every stream is reseeded from the step's key."""
  if not isinstance(value, jax.ShapeDtypeStruct):
    return value
  if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
    return jax.random.key(0)
  return jnp.zeros(value.shape, value.dtype)


#: The NNX variables that make the model state: all but the parameters and RNG streams.
_OTHER = nnx.Not(nnx.Any(nnx.Param, nnx.RngState))


class _NnxBackend:
  kind = "nnx"
  native_gates = False

  def __init__(self, module):
    if isinstance(module, nnx.Module):
      self.constructor = None
      self.module = module
    else:
      if isinstance(module, type):  # an nnx.Module class takes its streams as ``rngs=``
        cls = module
        module = lambda rngs: cls(rngs=rngs)  # noqa: E731
      self.constructor = module
      self.module = nnx.eval_shape(lambda: module(nnx.Rngs(0)))  # shapes only, no compute
      if not isinstance(self.module, nnx.Module):
        raise ValueError(f"a model constructor must return an nnx.Module for rngs, got "
                         f"{type(self.module).__name__}")
    self.graphdef, params, _ = nnx.split(self.module, nnx.Param, ...)
    self.rng_state = nnx.state(self.module, nnx.RngState)
    self.rng_tags = sorted({v.tag for v in jax.tree.leaves(
        self.rng_state, is_leaf=lambda v: isinstance(v, nnx.RngKey)) if isinstance(v, nnx.RngKey)})
    self.template = (params, nnx.state(self.module, _OTHER))

  def init(self, key, x):
    del x
    module = self.module if self.constructor is None else self.constructor(nnx.Rngs(key))
    params = nnx.state(module, nnx.Param)
    other = nnx.state(module, _OTHER)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(other)

  def _merge(self, params, model_state, train: bool, key):
    """A fresh module (inside the caller's trace) with these variables and mode, its RNG
    streams seeded from ``key`` (each stream's tag folded in; one stream takes ``key``)."""
    param_state, other_state = jax.tree.map(lambda v: v, self.template)
    rng_state = jax.tree.map(_concrete_stream, self.rng_state)
    nnx.replace_by_pure_dict(param_state, params)
    nnx.replace_by_pure_dict(other_state, model_state)
    module = nnx.merge(self.graphdef, param_state, other_state, rng_state)
    module.set_attributes(deterministic=not train, use_running_average=not train,
                          raise_if_not_found=False)
    if key is not None and self.rng_tags:
      if len(self.rng_tags) == 1:
        nnx.reseed(module, **{self.rng_tags[0]: key})
      else:
        nnx.reseed(module, **{tag: jax.random.fold_in(key, i)
                              for i, tag in enumerate(self.rng_tags)})
    return module

  def apply(self, params, model_state, x, train, gates, key, sites):
    module = self._merge(params, model_state, train, key)
    if gates:
      with sites_lib.nnx_gates(module, sites, gates) as reached:
        outputs = module(x)
      sites_lib.check_reached(gates, reached)
    else:
      outputs = module(x)
    new_state = model_state
    if train and model_state:
      new_state = nnx.to_pure_dict(nnx.state(module, _OTHER))
    return outputs, new_state

  def trace_calls(self, params_shape, state_shape, sample) -> list[sites_lib.Call]:
    box = []

    def forward(params, state, x):
      module = self._merge(params, state, False, None)
      with sites_lib.nnx_recorder(module) as calls:
        module(x)
      box.append(calls)
    jax.eval_shape(forward, params_shape, state_shape, sample)
    return box[0]
