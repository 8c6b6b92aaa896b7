"""The experiment runner: config schema, the one ``run``, records, reloading.

Attributes are imported on first use, so that the recipes (which use the
config helpers and keys of this package) and the runner (which plays the
recipes) can import each other's modules in any order.
"""

import importlib

_EXPORTS = {
    "ConfigError": "sparsejax.runner.config",
    "base_config": "sparsejax.runner.config",
    "field_names": "sparsejax.runner.config",
    "validate": "sparsejax.runner.config",
    "run": "sparsejax.runner.program",
    "seed_config": "sparsejax.runner.program",
    "run_id_of": "sparsejax.runner.records",
    "LoadedRun": "sparsejax.runner.reload",
    "evaluate_run": "sparsejax.runner.reload",
    "load_run": "sparsejax.runner.reload",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'sparsejax.runner' has no attribute {name!r}")
