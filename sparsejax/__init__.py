"""sparsejax: functional JAX/Flax toolkit for training sparse networks and pruning them."""

from sparsejax import xla_flags as _xla_flags

_xla_flags.apply()

__version__ = "0.1.0"
