"""Compaction: removing pruned units from any model, found from its jaxpr."""

from sparsejax.compaction.coupling import Group, Member, coupling

__all__ = ["Group", "Member", "coupling"]
