"""Models by name, with the capabilities they declare; the user's own by import path.

As big_vision looks its models up by name, a run names its model: one of the
registered names (the zoo below; :func:`register_model` adds one) or the
import path ``"package.module:Attr"`` of the user's own linen module class,
NNX module class, or a function returning either. Either way the result is
the one model contract, a :class:`~sparsejax.models.adapter.ModelAdapter`
(:func:`build`); a registered model adds the capabilities tracing cannot see
(:mod:`sparsejax.models.capabilities`). This module is the only place that
knows the zoo's names.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
from flax import nnx

from sparsejax.models import capabilities as caps
from sparsejax.models.adapter import ModelAdapter, adapt
from sparsejax.models.basic_cnn import BasicCNN
from sparsejax.models.bmrs import BMRSLeNet5, bmrs_mlp
from sparsejax.models.lenet import LeNet5Caffe
from sparsejax.models.mlp import MLP, lenet_300_100, lenet_300_100_no_bias
from sparsejax.models.resnet import resnet18, resnet50
from sparsejax.models.vgg import VGG16BN
from sparsejax.models.vit import vit_b16, vit_small_cifar


class ModelSpec(NamedTuple):
  """What a run tells a model about itself.

  Attributes:
    input_shape: one example's shape (no batch axis).
    num_classes: the outputs per example.
    dtype: the computation dtype (bfloat16 for mixed precision).
    param_dtype: the parameters' dtype.
    options: the run's model fields that zoo entries read (``widths``,
      ``activation``, ``hidden_layers``, ``hidden_dim``) and the fields a
      method sets (``batchnorm``, ``weight_init``).
  """
  input_shape: tuple[int, ...]
  num_classes: int
  dtype: Any
  param_dtype: Any
  options: Mapping[str, Any]


class Entry(NamedTuple):
  """A registered model: ``build(spec) -> module`` and its declared capabilities."""
  build: Callable[[ModelSpec], Any]
  capabilities: frozenset


_REGISTRY: dict[str, Entry] = {}


def register_model(name: str, build_fn: Callable[[ModelSpec], Any],
                   capabilities=()) -> None:
  """Files a model under ``name`` (once); ``build_fn(spec)`` returns the module."""
  if name in _REGISTRY:
    raise ValueError(f"a model named {name!r} is already registered")
  if ":" in name:
    raise ValueError(f"model names may not contain ':' (reserved for import paths), got {name!r}")
  _REGISTRY[name] = Entry(build_fn, caps.check_names(capabilities))


def model_names() -> list[str]:
  """The registered names, in registration order."""
  return list(_REGISTRY)


def is_import_path(name: str) -> bool:
  """``"package.module:Attr"``: the user's own model rather than a registered one."""
  return ":" in name


def capabilities_of(name: str) -> frozenset:
  """The capabilities a registered model declares (none for an import path)."""
  return frozenset() if is_import_path(name) else _entry(name).capabilities


def _entry(name: str) -> Entry:
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)}, "
                     "or 'package.module:Class' for your own")
  return _REGISTRY[name]


def import_model(path: str) -> Any:
  """The object at ``"package.module:Attr"`` (``Attr`` may be dotted).

  Raises:
    ValueError: the module cannot be imported or has no such attribute.
  """
  module_name, _, attr = path.partition(":")
  if not module_name or not attr:
    raise ValueError(f"a model import path is 'package.module:Class', got {path!r}")
  try:
    obj = importlib.import_module(module_name)
  except ImportError as error:
    raise ValueError(f"cannot import module {module_name!r} of model {path!r}: {error}") from None
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise ValueError(f"module {module_name!r} has no attribute {attr!r} (model {path!r})")
    obj = getattr(obj, part)
  return obj


def _user_module(path: str, kwargs: Mapping[str, Any]):
  """The user's model: a linen module, or an NNX constructor ``rngs -> module``."""
  obj = import_model(path)
  if isinstance(obj, type) and issubclass(obj, nnx.Module):
    return lambda rngs: obj(**kwargs, rngs=rngs)
  try:
    module = obj(**kwargs)
  except TypeError as error:
    raise ValueError(f"model {path!r} does not take model_kwargs {dict(kwargs)}: {error}"
                     ) from None
  if not isinstance(module, (nn.Module, nnx.Module)):
    raise ValueError(f"model {path!r} gave a {type(module).__name__}, not a flax linen or NNX "
                     "module")
  return module


def build_module(name: str, spec: ModelSpec, kwargs: Mapping[str, Any] | None = None):
  """The module named ``name`` (registered, or an import path built with ``kwargs``)."""
  if is_import_path(name):
    return _user_module(name, kwargs or {})
  if kwargs:
    raise ValueError(f"model_kwargs are for your own models ('package.module:Class'); the "
                     f"registered model {name!r} takes its fields from the run config")
  return _entry(name).build(spec)


def build(name: str, spec: ModelSpec, kwargs: Mapping[str, Any] | None = None,
          **adapt_options) -> ModelAdapter:
  """The adapted model ``name`` for inputs of ``spec.input_shape``.

  Args:
    name: a registered name or ``"package.module:Attr"``.
    spec: the run's view of the model.
    kwargs: the user model's constructor arguments.
    **adapt_options: passed to :func:`~sparsejax.models.adapter.adapt`
      (``sites``, ``prunable``).
  """
  module = build_module(name, spec, kwargs)
  sample = jax.ShapeDtypeStruct((1, *spec.input_shape), spec.param_dtype)
  return adapt(module, sample, capabilities=capabilities_of(name), **adapt_options)


# --------------------------------------------------------------------------
# The zoo


def _dtypes(spec: ModelSpec, *fields: str) -> dict:
  out = dict(dtype=spec.dtype, param_dtype=spec.param_dtype)
  out.update({f: spec.options[f] for f in fields if f in spec.options})
  return out


register_model("mlp", lambda s: MLP(widths=tuple(s.options["widths"]),
                                    activation=s.options["activation"],
                                    **_dtypes(s, "weight_init")),
               ("dense_chain", "deletable_units", "gate_chain", "torch_init"))
register_model("lenet_300_100", lambda s: lenet_300_100(**_dtypes(s, "weight_init")),
               ("dense_chain", "deletable_units", "gate_chain", "torch_init"))
register_model("lenet_300_100_no_bias",
               lambda s: lenet_300_100_no_bias(**_dtypes(s, "weight_init")), ("torch_init",))
register_model("lenet5_caffe", lambda s: LeNet5Caffe(**_dtypes(s)),
               ("deletable_units", "gate_chain", "mixed_precision"))
register_model("vgg16_bn", lambda s: VGG16BN(**_dtypes(s, "batchnorm")),
               ("l0_batchnorm", "mixed_precision"))
register_model("basic_cnn", lambda s: BasicCNN(num_classes=s.num_classes,
                                               **_dtypes(s, "weight_init")),
               ("conv_filters", "torch_init"))
register_model("bmrs_mlp", lambda s: bmrs_mlp(
    num_classes=s.num_classes, n_layers=s.options["hidden_layers"],
    hidden_dim=s.options["hidden_dim"], in_dim=math.prod(s.input_shape), **_dtypes(s)))
register_model("bmrs_lenet5", lambda s: BMRSLeNet5(
    num_classes=s.num_classes, in_channels=s.input_shape[-1], **_dtypes(s)))
register_model("resnet18", lambda s: resnet18(num_classes=s.num_classes,
                                              **_dtypes(s, "batchnorm")),
               ("l0_batchnorm", "mixed_precision"))
register_model("resnet50", lambda s: resnet50(num_classes=s.num_classes,
                                              **_dtypes(s, "batchnorm")),
               ("l0_batchnorm", "mixed_precision"))
register_model("vit_small", lambda s: vit_small_cifar(num_classes=s.num_classes, **_dtypes(s)))
register_model("vit_b16", lambda s: vit_b16(num_classes=s.num_classes, **_dtypes(s)))
