"""Checks on config fields that name the field and what it accepts.

The runner's schema (:mod:`sparsejax.runner.config`) and every recipe's
``validate`` report a bad field with these, before any compute, as one
:class:`ConfigError` whose message names the field, its value and the
accepted values. A config is an ``ml_collections.ConfigDict`` (or a mapping)
nested to any depth; a field is named by its dotted path (``pruning.density``).
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections


class ConfigError(ValueError):
  """A config field is unknown or has a value outside its accepted set."""


def flatten(config, prefix: str = "") -> dict[str, Any]:
  """``{dotted.name: value}`` of every field of ``config`` (values as they are).

  Args:
    config: an ``ml_collections.ConfigDict`` or a mapping, nested to any depth.
    prefix: prepended to every name (used by the recursion).
  """
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def choice(config, name: str, accepted: Sequence) -> None:
  """Raises :class:`ConfigError` unless field ``name`` is one of ``accepted``."""
  value = flatten(config)[name]
  if value not in accepted:
    raise ConfigError(f"config field {name!r} is {value!r}; accepted values: "
                      f"{', '.join(map(str, accepted))}")


def require(ok: bool, name: str, value, what: str) -> None:
  """Raises :class:`ConfigError` naming field ``name`` unless ``ok``."""
  if not ok:
    raise ConfigError(f"config field {name!r} is {value!r}; it must be {what}")
