"""What a model offers to the methods that need something of it.

Methods ask for capabilities, never for an architecture's name. A model has
a capability because the adapter finds it (:func:`found`: gate sites, mutable
collections) or because its registry entry declares it (what tracing cannot
see: a named activation whose dead units may be folded away, filters that
may be deleted). A method applied to a model without a capability it needs
gets a :class:`CapabilityError` naming the capability, what it means and the
method.
"""

from __future__ import annotations

from typing import Iterable

#: Every capability, and what it means.
CAPABILITIES = {
    "gate_sites": "units (the outputs of its Dense / Conv layers) that unit-level methods gate "
                  "and mask",
    "batch_stats": "mutable collections such as BatchNorm statistics",
    "layer_gates": "gates on any traced Dense / Conv layer's inputs or outputs, attached from "
                   "outside ('path:input', 'path:output')",
    "dense_chain": "a chain of Dense layers with one named activation (the `activation` field): "
                   "the layerwise Bernoulli fit and the deletion of dead neurons work on it",
    "deletable_units": "a Conv / Dense chain whose dead units (neurons, conv channels) are "
                       "deleted into a smaller dense model (an `activation` field)",
    "gate_chain": "structured gates on a chain Conv_0.., Dense_0.. whose activations take "
                  "per-example gates (a plain chain with 2x2 VALID pooling)",
    "conv_filters": "conv filters as gate sites that the filter search masks and deletes "
                    "into a smaller CNN",
    "l0_batchnorm": "a `batchnorm` field that selects L0 BatchNorm (statistics over the active "
                    "channels only)",
    "torch_init": "a `weight_init` field that selects PyTorch's default initialisation",
    "mixed_precision": "a `dtype` field for bfloat16 computation with float32 parameters",
}


class CapabilityError(ValueError):
  """A method was applied to a model that lacks a capability it needs."""


def check_names(names: Iterable[str]) -> frozenset:
  """``frozenset(names)``; ``ValueError`` naming an unknown capability."""
  names = frozenset(names)
  unknown = sorted(names - set(CAPABILITIES))
  if unknown:
    raise ValueError(f"unknown capabilities {unknown}; known: {sorted(CAPABILITIES)}")
  return names


def found(units, model_state, layer_gates: bool) -> frozenset:
  """The capabilities the adapter sees from a traced model: gate sites, mutable state,
  gates on any traced layer."""
  out = {"layer_gates"} if layer_gates else set()
  if units:
    out.add("gate_sites")
  if model_state:
    out.add("batch_stats")
  return frozenset(out)


def require(capabilities: Iterable[str], capability: str, family: str) -> None:
  """Raises :class:`CapabilityError` unless ``capability`` is in ``capabilities``."""
  if capability not in CAPABILITIES:
    raise ValueError(f"unknown capability {capability!r}; known: {sorted(CAPABILITIES)}")
  if capability not in capabilities:
    raise CapabilityError(
        f"{family} needs a model with capability {capability!r} ({CAPABILITIES[capability]}); "
        f"this model has {sorted(capabilities) or 'none'}")
