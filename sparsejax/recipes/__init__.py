"""Method families as recipes, registered by method name.

``get_recipe(config.method)`` returns the family's :class:`Recipe`; the runner
(:mod:`sparsejax.runner.program`) plays its plan and knows nothing else about it.
Importing this package registers the families below; a new family is one
module here (``register_recipe(Recipe(...))``), its configs and its tests.
"""

from sparsejax.recipes.base import (Outcome, Plan, Recipe, Stage, StageInput, get_recipe,
                                    recipe_names, register_recipe, registered)

# The families (importing a module registers its recipes).
from sparsejax.recipes import (  # noqa: E402,F401  isort: skip
    anneal, bmrs, deephoyer, efficient_compression, l0, magnitude, sparse_training)

__all__ = ["Outcome", "Plan", "Recipe", "Stage", "StageInput", "get_recipe", "recipe_names",
           "register_recipe", "registered"]
