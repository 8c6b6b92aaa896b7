"""The experiment runner: config schema, building a run, running it, reloading it."""

from sparsejax.runner.config import ConfigError, base_config, field_names, validate
from sparsejax.runner.experiment import run, run_id_of
from sparsejax.runner.reload import LoadedRun, evaluate_run, load_run

__all__ = ["ConfigError", "LoadedRun", "base_config", "evaluate_run", "field_names", "load_run",
           "run", "run_id_of", "validate"]
