"""The experiment runner: config schema, the one ``run``, records, reloading.

The runner plays the recipes (:mod:`sparsejax.recipes`), which depend on
the library only, so nothing here is imported back by them.
"""

from sparsejax.runner.config import base_config, field_names, validate
from sparsejax.runner.program import run, seed_config
from sparsejax.runner.records import run_id_of
from sparsejax.runner.reload import LoadedRun, evaluate_run, load_compacted, load_run

__all__ = ["LoadedRun", "base_config", "evaluate_run", "field_names", "load_compacted", "load_run",
           "run", "run_id_of", "seed_config", "validate"]
