"""sparsejax: functional JAX/Flax toolkit for training sparse networks and pruning them.

The library's modules are attributes of the package, as in optax:
``sparsejax.masks``, ``.objectives``, ``.pruning``, ``.sparsity``, ``.models``,
``.train``, ``.checkpoint`` and ``.xla_flags``. The data loaders (which import
tensorflow-datasets), the runner, the recipes and the studies are imported
by their module path (``from sparsejax.runner import run``).

Importing sparsejax changes no process-wide setting; the XLA CPU options it
recommends are an explicit call, :func:`sparsejax.xla_flags.apply`.
"""

from sparsejax import (checkpoint, masks, models, objectives, pruning, sparsity, train,
                       xla_flags)

__version__ = "0.1.0"
