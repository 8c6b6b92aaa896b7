"""sparsejax: functional JAX/Flax toolkit for training sparse networks and pruning them."""

__version__ = "0.1.0"
