"""Which parameter axes are coupled, read from the jaxpr of a model's forward pass.

Removing a unit of a network (a Dense layer's output, a convolution's
channel) removes one index along several parameter axes at once: the
producing kernel's output axis and its bias, the BatchNorm scale, bias and
statistics that follow, and the next layer's input axis, which may be a
flattened ``(height, width, channel)`` axis or the channels of both branches
of a residual addition. Torch-Pruning finds these groups with a dependency
graph of PyTorch modules; in JAX the forward pass's jaxpr states them
exactly, whatever the model's code looks like.

:func:`coupling` traces ``apply(variables, *inputs)`` and labels every axis
of every value in the program with a node of a union-find: an operation
that pairs two axes (a matrix product's contracted axes, an element-wise
operation's aligned axes, a convolution's feature axes) joins their nodes,
and a reshape that merges or splits axes records the merged axis as a
composite of its factors. The classes that hold parameter axes are the
groups (:class:`Group`). A group is *fixed* (its units cannot be removed)
when it meets the model's inputs or outputs, a reduction over its axis (a
mean would change with the count), or an operation the analysis does not
know; ``Group.reason`` says which.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
from jax.extend import core as jax_core

from sparsejax import masks as masks_lib

#: Primitives that act entry by entry on operands of one shape (size-1 axes broadcast).
ELEMENTWISE = frozenset("""
    abs acos acosh add asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
    copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt integer_pow is_finite le
    lgamma digamma log log1p logistic lt max min mul ne neg nextafter not and or xor pow
    reduce_precision rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan
    tanh
""".split())
#: Primitives whose sub-jaxpr is their meaning (a call).
CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
         "core_call": "call_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr",
         "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
         "custom_vjp_call_jaxpr": "fun_jaxpr"}
#: The reason of an axis merged from others by a reshape: its factors are the groups.
MERGED = "an axis merged from others by a reshape (its factors are the groups)"
#: The reason of an axis of the model's input.
INPUT = "the model's input"
#: Reasons that leave an axis's indices removable by a gather (any other reason overrides
#: them): a flattened feature map's positions, the input's features.
GATHERABLE = (MERGED, INPUT)
REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax",
                        "argmin", "reduce_and", "reduce_or"})


@dataclasses.dataclass(frozen=True)
class Member:
  """One parameter axis of a group: ``path``'s axis ``axis``; with ``factor``, only the
  ``factor[0]``-th factor of that axis seen as the row-major product of ``factor[1]``."""
  path: str
  axis: int
  factor: tuple[int, tuple[int, ...]] | None = None


@dataclasses.dataclass(frozen=True)
class Group:
  """Coupled parameter axes: removing unit ``u`` removes index ``u`` along each member."""
  size: int
  members: tuple[Member, ...]
  reason: str | None = None  # why its units cannot be removed; None: removable

  @property
  def removable(self) -> bool:
    return self.reason is None


class _Nodes:
  """A union-find of axis nodes with their sizes, fixed reasons and composites."""

  def __init__(self):
    self.parent: list[int] = []
    self.size: list[int] = []
    self.reason: dict[int, str] = {}
    self.factors: dict[int, tuple[int, ...]] = {}  # root -> its factor nodes (row-major)
    self.split: set[int] = set()  # nodes split by a reshape

  def new(self, size: int, reason: str | None = None) -> int:
    self.parent.append(len(self.parent))
    self.size.append(size)
    if reason:
      self.reason[len(self.parent) - 1] = reason
    return len(self.parent) - 1

  def find(self, n: int) -> int:
    while self.parent[n] != n:
      self.parent[n] = self.parent[self.parent[n]]
      n = self.parent[n]
    return n

  def union(self, a: int, b: int) -> int:
    a, b = self.find(a), self.find(b)
    if a == b:
      return a
    if self.size[a] != self.size[b]:
      raise AssertionError(f"coupled axes of sizes {self.size[a]} and {self.size[b]}")
    self.parent[b] = a
    if b in self.reason:
      self._give(a, self.reason.pop(b))
    if b in self.factors:
      self.compose(a, self.factors.pop(b))
    return a

  def compose(self, n: int, factors: tuple[int, ...]) -> None:
    """Records that axis ``n`` is the row-major product of ``factors``; an axis already
    composed of factors of the same sizes has them joined pairwise (a reshape undone)."""
    root = self.find(n)
    self._give(root, MERGED)
    known = self.factors.get(root)
    if known is None:
      self.factors[root] = tuple(factors)
    elif [self.size[f] for f in known] == [self.size[f] for f in factors]:
      for f, g in zip(known, factors):
        self.union(f, g)
    else:
      for f in known + tuple(factors):
        self.fix(f, "an axis reshaped two different ways")

  def _give(self, root: int, reason: str) -> None:
    """The first reason stays, except that any other reason overrides
    :data:`GATHERABLE` ones."""
    current = self.reason.get(root)
    if current is None or current in GATHERABLE and reason not in GATHERABLE:
      self.reason[root] = reason

  def fix(self, n: int, reason: str) -> None:
    self._give(self.find(n), reason)

  def why(self, n: int) -> str | None:
    return self.reason.get(self.find(n))


class _Tracer:
  """Propagates axis nodes through a jaxpr."""

  def __init__(self):
    self.nodes = _Nodes()
    self.labels: dict[Any, list[int]] = {}
    # The labels in execution order (each run's constants, then each equation's outputs,
    # calls after their bodies), for passes that walk the program again (compaction).
    self.log: list[list[list[int]]] = []

  def fresh(self, aval, reason: str | None = None) -> list[int]:
    return [self.nodes.new(d, reason) for d in getattr(aval, "shape", ())]

  def of(self, var) -> list[int]:
    if isinstance(var, jax_core.Literal):
      return self.fresh(var.aval)
    return self.labels[var]

  def fix_all(self, labels: Sequence[int], reason: str) -> None:
    for n in labels:
      self.nodes.fix(n, reason)

  def run(self, jaxpr, in_labels: Sequence[list[int]]) -> list[list[int]]:
    for var, labels in zip(jaxpr.invars, in_labels):
      self.labels[var] = labels
    for var in jaxpr.constvars:
      self.labels[var] = self.fresh(var.aval)
    self.log.append([self.labels[v] for v in jaxpr.constvars])
    for eqn in jaxpr.eqns:
      outs = self.equation(eqn)
      self.log.append(outs)
      for var, labels in zip(eqn.outvars, outs):
        self.labels[var] = labels
    return [self.of(v) for v in jaxpr.outvars]

  def equation(self, eqn) -> list[list[int]]:
    name = eqn.primitive.name
    ins = [self.of(v) for v in eqn.invars]
    shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
    out_aval = eqn.outvars[0].aval
    if name in CALLS:
      sub = eqn.params[CALLS[name]]
      return self.run(getattr(sub, "jaxpr", sub), ins)
    if name in ELEMENTWISE:
      out = self.fresh(out_aval)
      for labels, shape in zip(ins, shapes):
        if len(shape) == len(out):
          for i, n in enumerate(labels):
            if shape[i] == out_aval.shape[i]:
              out[i] = self.nodes.union(out[i], n)
            else:
              self.nodes.fix(n, "an axis of size 1 broadcast")
      return [out] + [self.fresh(v.aval) for v in eqn.outvars[1:]]
    if name == "dot_general":
      (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
      lhs, rhs = ins
      for a, b in zip(lc, rc):
        self.nodes.union(lhs[a], rhs[b])
      for a, b in zip(lb, rb):
        self.nodes.union(lhs[a], rhs[b])
      free_l = [n for i, n in enumerate(lhs) if i not in lc and i not in lb]
      free_r = [n for i, n in enumerate(rhs) if i not in rc and i not in rb]
      return [[lhs[i] for i in lb] + free_l + free_r]
    if name == "conv_general_dilated":
      return [self.conv(eqn, ins)]
    if name == "transpose":
      return [[ins[0][p] for p in eqn.params["permutation"]]]
    if name == "reshape":
      return [self.reshape(ins[0], shapes[0], out_aval.shape)]
    if name == "broadcast_in_dim":
      out = self.fresh(out_aval)
      for src, dst in enumerate(eqn.params["broadcast_dimensions"]):
        if shapes[0][src] == out_aval.shape[dst]:
          out[dst] = ins[0][src]
        else:
          self.nodes.fix(ins[0][src], "an axis of size 1 broadcast")
      return [out]
    if name == "squeeze":
      drop = set(eqn.params["dimensions"])
      return [[n for i, n in enumerate(ins[0]) if i not in drop]]
    if name == "expand_dims":
      out, it = [], iter(ins[0])
      dims = set(eqn.params["dimensions"])
      for i in range(len(out_aval.shape)):
        out.append(self.nodes.new(1) if i in dims else next(it))
      return [out]
    if name in REDUCTIONS:
      axes = set(eqn.params["axes"])
      for i in axes:
        self.nodes.fix(ins[0][i], f"a reduction over the axis ({name})")
      return [[n for i, n in enumerate(ins[0]) if i not in axes]]
    if name == "reduce_window" or name.startswith("reduce_window_"):
      return [self.window(eqn, ins[0], shapes[0])]
    if name == "concatenate":
      return [self.concatenate(eqn, ins, shapes)]
    if name in ("iota", "random_bits", "random_seed", "random_wrap", "random_unwrap",
                "threefry2x32", "rng_bit_generator"):
      return [self.fresh(v.aval) for v in eqn.outvars]
    for labels in ins:
      self.fix_all(labels, f"an operation the analysis does not know ({name})")
    return [self.fresh(v.aval, f"an operation the analysis does not know ({name})")
            for v in eqn.outvars]

  def conv(self, eqn, ins) -> list[int]:
    lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
    lhs, rhs = ins
    groups = eqn.params.get("feature_group_count", 1)
    if groups == 1:
      self.nodes.union(lhs[lhs_spec[1]], rhs[rhs_spec[1]])
    else:
      self.nodes.fix(lhs[lhs_spec[1]], "a grouped convolution")
      self.nodes.fix(rhs[rhs_spec[0]], "a grouped convolution")
    for k in rhs_spec[2:]:
      self.nodes.fix(rhs[k], "a convolution's window")
    for k in lhs_spec[2:]:
      self.nodes.fix(lhs[k], "a spatial axis")
    out = self.fresh(eqn.outvars[0].aval, "a spatial axis")
    out[out_spec[0]] = lhs[lhs_spec[0]]
    out[out_spec[1]] = rhs[rhs_spec[0]]
    return out

  def reshape(self, labels, shape, new_shape) -> list[int]:
    """Matches runs of axes by their products: a merge records a composite output axis,
    a split a composite input axis; size-1 axes are dropped or fresh."""
    out: list[int] = []
    i = j = 0
    while i < len(shape) or j < len(new_shape):
      if i < len(shape) and shape[i] == 1 and (j >= len(new_shape) or new_shape[j] != 1):
        i += 1
        continue
      if j < len(new_shape) and new_shape[j] == 1 and (i >= len(shape) or shape[i] != 1):
        out.append(self.nodes.new(1))
        j += 1
        continue
      if i >= len(shape) or j >= len(new_shape):
        break
      a, b, i0, j0 = shape[i], new_shape[j], i, j
      while a != b:
        if a < b:
          i += 1
          a *= shape[i]
        else:
          j += 1
          b *= new_shape[j]
      ins, outs = list(range(i0, i + 1)), list(range(j0, j + 1))
      if len(ins) == 1 and len(outs) == 1:
        out.append(labels[i0])
      elif len(outs) == 1:
        merged = self.nodes.new(new_shape[j0])
        self.nodes.compose(merged, tuple(labels[k] for k in ins))
        out.append(merged)
      elif len(ins) == 1:
        parts = [self.nodes.new(new_shape[k]) for k in outs]
        self.nodes.compose(labels[i0], tuple(parts))
        self.nodes.split.add(labels[i0])
        out.extend(parts)
      else:
        for k in ins:
          self.nodes.fix(labels[k], "a reshape that regroups axes")
        out.extend(self.nodes.new(new_shape[k], "a reshape that regroups axes") for k in outs)
      i, j = i + 1, j + 1
    return out

  def window(self, eqn, labels, shape) -> list[int]:
    dims = eqn.params["window_dimensions"]
    strides = eqn.params["window_strides"]
    out = self.fresh(eqn.outvars[0].aval, "a pooling window")
    for k, (d, s) in enumerate(zip(dims, strides)):
      if d == 1 and s == 1 and eqn.outvars[0].aval.shape[k] == shape[k]:
        out[k] = labels[k]
      else:
        self.nodes.fix(labels[k], "a pooling window")
    return out

  def concatenate(self, eqn, ins, shapes) -> list[int]:
    dim = eqn.params["dimension"]
    out = self.fresh(eqn.outvars[0].aval)
    for labels in ins:
      for k, n in enumerate(labels):
        if k == dim:
          self.nodes.fix(n, "a concatenation along the axis")
        else:
          out[k] = self.nodes.union(out[k], n)
    self.nodes.fix(out[dim], "a concatenation along the axis")
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
  """A traced forward pass with every axis labelled (the passes of compaction walk it).

  Attributes:
    jaxpr: the closed jaxpr of ``apply(variables, *inputs)``.
    nodes: the union-find of axis nodes, complete.
    log: the labels in execution order (:attr:`_Tracer.log`).
    in_labels: the labels of the jaxpr's inputs (the variables' leaves, then the inputs).
    paths: the variables' leaves' paths.
    roots: ``{root node: Group}`` for every class that holds a parameter axis.
  """
  jaxpr: Any
  nodes: _Nodes
  log: list
  in_labels: list
  paths: list
  roots: dict


def trace(apply: Callable, variables, *inputs) -> Program:
  """The :class:`Program` of ``apply(variables, *inputs)`` (see :func:`coupling`)."""
  closed = jax.make_jaxpr(apply)(variables, *inputs)
  tracer = _Tracer()
  flat, _ = jax.tree_util.tree_flatten_with_path(variables)
  leaf_labels = [tracer.fresh(leaf) for _, leaf in flat]
  input_labels = [tracer.fresh(v.aval, INPUT)
                  for v in closed.jaxpr.invars[len(flat):]]
  in_labels = leaf_labels + input_labels
  outs = tracer.run(closed.jaxpr, in_labels)
  for labels in outs:
    tracer.fix_all(labels, "the model's output")
  nodes = tracer.nodes
  changed = True
  while changed:  # A fixed merged axis fixes its factors (nested merges included).
    changed = False
    for composite, factors in list(nodes.factors.items()):
      reason = nodes.why(composite)
      for f in factors if reason != MERGED else ():
        before = nodes.why(f)
        nodes.fix(f, reason)
        changed |= nodes.why(f) != before
  members: dict[int, list[Member]] = {}
  paths = [masks_lib.path_str(path) for path, _ in flat]
  for name, labels in zip(paths, leaf_labels):
    for axis, n in enumerate(labels):
      members.setdefault(nodes.find(n), []).append(Member(name, axis))
  for composite, factors in nodes.factors.items():
    owners = members.get(nodes.find(composite), [])
    sizes = tuple(nodes.size[f] for f in factors)
    for k, f in enumerate(factors):
      members.setdefault(nodes.find(f), []).extend(
          Member(m.path, m.axis, (k, sizes)) for m in owners if m.factor is None)
  roots = {root: Group(nodes.size[root], tuple(ms), nodes.why(root))
           for root, ms in members.items() if ms}
  return Program(closed, nodes, tracer.log, in_labels, paths, roots)


def coupling(apply: Callable, variables, *inputs) -> list[Group]:
  """The groups of coupled parameter axes of ``apply(variables, *inputs)``.

  Args:
    apply: the forward pass (for a model adapter, ``lambda v, x: adapter.apply(v["params"],
      v["state"], x, train=False)[0]``).
    variables: its variables (a pytree of arrays: parameters and statistics).
    *inputs: example inputs (their values are not used, only their shapes).

  Returns:
    One :class:`Group` per class of coupled axes that holds a parameter axis, in the
    order of the variables' first axes; a member with ``factor`` is a factor of an axis
    merged by a reshape (a convolution's channels in the rows of the Dense layer after a
    flatten).
  """
  return list(trace(apply, variables, *inputs).roots.values())
