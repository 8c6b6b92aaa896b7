"""Compaction: pruned units removed from any model, found from its jaxpr.

* :func:`coupling`: the groups of coupled parameter axes (:mod:`.axes`).
* :func:`compact`: the smaller dense model that computes the masked one (:mod:`.compact`).
* :mod:`.cost`: parameters, multiply-accumulates and FLOPs of a model.
"""

from sparsejax.compaction import cost
from sparsejax.compaction.axes import Group, Member, coupling
from sparsejax.compaction.compact import Compacted, GroupResult, compact, forward_of

__all__ = ["Compacted", "Group", "GroupResult", "Member", "compact", "cost", "coupling",
           "forward_of"]
