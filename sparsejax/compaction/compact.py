"""Compaction: a pruned model rebuilt as a smaller dense one, from its jaxpr.

A unit ``u`` of a removable group (:func:`sparsejax.compaction.coupling`)
indexes one slice of every value in the forward pass that carries the
group's axis. Along such an axis the program acts index by index
(element-wise operations, the free axes of products, batch axes), except
where the axis is *contracted*: a matrix product's summed axis, a
convolution's input channels, or an axis merged by a reshape that is then
contracted (a flatten before a Dense layer). Every other operation that mixes
indices (a reduction, a window, a concatenation, the model's output) makes
the group fixed. Removing ``u`` from every member is therefore exact when, at
every contraction of the axis, one operand's slice ``u`` is zero for every
input: its term :math:`\\sum_u a_u b_u` is then zero.

**Zero slices** are found without data, by rules over the program: a masked
parameter's slice that is all zero; a product with a zero factor (a gate at
0, a mask); a sum, difference, maximum or selection of zeros; an element-wise
:math:`f` with :math:`f(0) = 0` (ReLU, tanh, GELU's product, the square
root...); a matrix product's row of a zero row, a convolution's output
channel of a zero filter; reductions, pooling and transposes of zeros. A
unit removable only through a reshape (channels of a flattened feature map) is
removable when every flattened position it owns is. Only exact zeros count,
so the compacted model computes the masked one's outputs up to the rounding
of the sums it no longer makes (float64: 1e-15).

**The compacted model** runs the same program on the smaller variables: each
equation is bound again with the smaller shapes (reshapes and broadcasts get
their new sizes, arrays created inside at full size are indexed), so any
model whose groups are found compacts, without a rebuilt module. The program
is traced again for each new input shape. Calls are inlined; a call with a
custom derivative rule keeps it only where it is a known element-wise function
(:data:`CUSTOM_DERIVATIVES`: ReLU and ReLU6, recognised by their traced body),
else the compacted model's gradient may differ from the masked model's where
the rule and its primitives' own derivative differ.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jax_core

from sparsejax import masks as masks_lib
from sparsejax.compaction import axes
from sparsejax.models import adapter as adapter_lib

#: Element-wise primitives with f(0) = 0 (their output is zero where their input is).
ZERO_PRESERVING = frozenset("""
    abs asin asinh atan atanh cbrt ceil convert_element_type copy copy_p erf erf_inv expm1
    floor integer_pow log1p neg reduce_precision round sign sin sinh sqrt square stop_gradient
    tan tanh real imag
""".split())
#: Element-wise primitives that are zero where every operand is.
ZERO_IF_ALL = frozenset({"add", "sub", "max", "min", "add_any"})
#: Element-wise primitives that are zero where one operand is.
ZERO_IF_ANY = frozenset({"mul", "and"})
#: Operations that keep a zero slice zero along the axes they carry over unchanged.
CARRY_ZEROS = frozenset({"transpose", "squeeze", "broadcast_in_dim", "reshape", "reduce_sum",
                         "reduce_max", "reduce_min", "reduce_prod", "reduce_window_sum",
                         "reduce_window_max", "reduce_window_min", "reduce_window"})


class _Walk:
  """Walks an :class:`axes.Program` in the order it was traced, calls inlined."""

  def __init__(self, program: axes.Program):
    self.program = program
    self.nodes = program.nodes
    self._log = iter(program.log)

  def run_program(self, values: Sequence[Any]) -> list:
    closed = self.program.jaxpr
    return self.run(closed.jaxpr, closed.consts, values, self.program.in_labels)

  def run(self, jaxpr, consts, values, labels) -> list:
    env, lab = {}, {}
    const_labels = next(self._log)
    for var, value, labs in zip(jaxpr.constvars, consts, const_labels):
      env[var], lab[var] = self.constant(value, labs), labs
    for var, value, labs in zip(jaxpr.invars, values, labels):
      env[var], lab[var] = value, labs
    for eqn in jaxpr.eqns:
      ins = [self.literal(v.val) if isinstance(v, jax_core.Literal) else env[v]
             for v in eqn.invars]
      in_labels = [[] if isinstance(v, jax_core.Literal) else lab[v]  # literals are scalars
                   for v in eqn.invars]
      name = eqn.primitive.name
      if name in axes.CALLS:
        sub = eqn.params[axes.CALLS[name]]
        outs = self.call(eqn, ins)
        if outs is None:
          outs = self.run(getattr(sub, "jaxpr", sub), getattr(sub, "consts", ()), ins, in_labels)
        else:
          self.skip(getattr(sub, "jaxpr", sub))
        out_labels = next(self._log)
      else:
        out_labels = next(self._log)
        outs = self.equation(eqn, ins, in_labels, out_labels)
      for var, value, labs in zip(eqn.outvars, outs, out_labels):
        env[var], lab[var] = value, labs
    return [self.literal(v.val) if isinstance(v, jax_core.Literal) else env[v]
            for v in jaxpr.outvars]

  def skip(self, jaxpr) -> None:
    """Passes over a body's labels without evaluating it."""
    next(self._log)
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in axes.CALLS:
        sub = eqn.params[axes.CALLS[eqn.primitive.name]]
        self.skip(getattr(sub, "jaxpr", sub))
      next(self._log)

  def call(self, eqn, ins) -> list | None:
    """The outputs of a call evaluated whole, or ``None`` to walk its body."""
    del eqn, ins
    return None

  def constant(self, value, labels):
    raise NotImplementedError

  def literal(self, value):
    raise NotImplementedError

  def equation(self, eqn, ins, in_labels, out_labels) -> list:
    raise NotImplementedError


class _Zeros(NamedTuple):
  """What is known of a value: its concrete value (``None`` when it depends on the
  input), per axis which slices are zero for every input, and whether all of it is."""
  value: Any
  zero: tuple[np.ndarray, ...]
  all_zero: bool = False


def _known(value) -> _Zeros:
  if jax.dtypes.issubdtype(jnp.result_type(value), jax.dtypes.extended):  # PRNG keys
    return _Zeros(value, tuple(np.zeros(d, bool) for d in np.shape(value)))
  array = np.asarray(value)
  zero = tuple(
      np.all(array == 0, axis=tuple(i for i in range(array.ndim) if i != a))
      for a in range(array.ndim))
  return _Zeros(value, zero, not np.any(array))


def _unknown(shape, all_zero: bool = False) -> _Zeros:
  return _Zeros(None, tuple(np.full(d, all_zero) for d in shape), all_zero)


def _inferred(zero) -> _Zeros:
  return _Zeros(None, tuple(zero), any(z.size and z.all() for z in zero))


class _ZeroPass(_Walk):
  """Finds the zero slices of every value and, at every contraction of an axis, which
  of its indices contribute nothing (:attr:`harmless`, by node)."""

  def __init__(self, program):
    super().__init__(program)
    self.sites: list[tuple[int, np.ndarray]] = []

  def constant(self, value, labels):
    return _known(value)

  def literal(self, value):
    return _known(value)

  def equation(self, eqn, ins, in_labels, out_labels):
    if all(i.value is not None for i in ins) and not eqn.effects:
      outs = eqn.primitive.bind(*[i.value for i in ins], **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
      self._contractions(eqn, ins, in_labels)
      return [_known(o) for o in outs]
    self._contractions(eqn, ins, in_labels)
    name = eqn.primitive.name
    shape = tuple(eqn.outvars[0].aval.shape) if hasattr(eqn.outvars[0].aval, "shape") else ()
    if name in ZERO_PRESERVING or name in ZERO_IF_ALL or name in ZERO_IF_ANY or name in (
        "div", "rem", "select_n"):
      if name == "integer_pow" and eqn.params["y"] <= 0:
        return [_unknown(shape)]
      operands = {"div": ins[:1], "rem": ins[:1], "select_n": ins[1:]}.get(name, ins)
      combine = np.logical_or if name in ZERO_IF_ANY else np.logical_and
      zero = []
      for k, d in enumerate(shape):
        vectors = [np.full(d, i.all_zero) if len(i.zero) != len(shape) or len(i.zero[k]) != d
                   else i.zero[k] for i in operands]
        zero.append(functools.reduce(combine, vectors))
      return [_inferred(zero)]
    if name == "dot_general":
      (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
      lhs, rhs = ins
      batch = [lhs.zero[a] | rhs.zero[b] for a, b in zip(lb, rb)]
      free_l = [z for i, z in enumerate(lhs.zero) if i not in lc and i not in lb]
      free_r = [z for i, z in enumerate(rhs.zero) if i not in rc and i not in rb]
      return [self._all_if(tuple(batch + free_l + free_r), lhs, rhs)]
    if name == "conv_general_dilated":
      lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
      lhs, rhs = ins
      zero = list(_unknown(shape).zero)
      zero[out_spec[0]] = lhs.zero[lhs_spec[0]]
      zero[out_spec[1]] = rhs.zero[rhs_spec[0]]
      return [self._all_if(tuple(zero), lhs, rhs)]
    if name == "concatenate":
      dim = eqn.params["dimension"]
      zero = [np.concatenate([i.zero[k] for i in ins]) if k == dim
              else functools.reduce(np.logical_and, [i.zero[k] for i in ins])
              for k in range(len(shape))]
      return [_inferred(zero)]
    if name in CARRY_ZEROS or name.startswith("reduce_window"):
      carried = {n: z for n, z in zip(in_labels[0], ins[0].zero)}
      merged = self.nodes.factors
      zero = []
      for n, d in zip(out_labels[0], shape):
        if n in carried:
          zero.append(carried[n])
        elif name == "reshape" and self.nodes.find(n) in merged and all(
            f in carried for f in merged[self.nodes.find(n)]):
          parts = [carried[f] for f in merged[self.nodes.find(n)]]
          grid = np.zeros([p.size for p in parts], bool)
          for k, p in enumerate(parts):
            grid |= p.reshape([-1 if j == k else 1 for j in range(len(parts))])
          zero.append(grid.ravel())
        else:
          zero.append(np.full(d, ins[0].all_zero))
      return [_inferred(zero)]
    return [_unknown(getattr(v.aval, "shape", ())) for v in eqn.outvars]

  @staticmethod
  def _all_if(zero, *operands) -> _Zeros:
    if any(o.all_zero for o in operands):
      return _Zeros(None, tuple(np.ones_like(z) for z in zero), True)
    return _inferred(zero)

  def _contractions(self, eqn, ins, in_labels) -> None:
    name = eqn.primitive.name
    if name == "dot_general":
      (lc, rc), _ = eqn.params["dimension_numbers"]
      for a, b in zip(lc, rc):
        self.sites.append((in_labels[0][a], ins[0].zero[a] | ins[1].zero[b]))
    elif name == "conv_general_dilated" and eqn.params.get("feature_group_count", 1) == 1:
      lhs_spec, rhs_spec, _ = eqn.params["dimension_numbers"]
      self.sites.append((in_labels[0][lhs_spec[1]],
                         ins[0].zero[lhs_spec[1]] | ins[1].zero[rhs_spec[1]]))

  def harmless(self) -> dict[int, np.ndarray]:
    """``{root: bool[size]}``: the indices of each contracted class whose every
    contraction has a zero operand; a merged axis also passes its verdict to its
    factors (a factor's index is harmless when every merged index it owns is)."""
    result: dict[int, np.ndarray] = {}

    def add(node, vector):
      root = self.nodes.find(node)
      factors = self.nodes.factors.get(root)
      result[root] = result[root] & vector if root in result else vector
      if factors:
        grid = vector.reshape([self.nodes.size[f] for f in factors])
        for k, f in enumerate(factors):
          add(f, grid.all(axis=tuple(j for j in range(grid.ndim) if j != k)))
    for node, vector in self.sites:
      add(node, vector)
    return result


class _Plan:
  """The kept indices of every class of axes, and the shapes and slices they give.

  A merged axis is indexed by the product of its factors' kept indices, or by its own
  kept indices (a gather after the reshape that merges it) where it has them.
  """

  def __init__(self, nodes, kept: dict[int, np.ndarray]):
    self.nodes = nodes
    self.kept = kept

  def index(self, node) -> np.ndarray | None:
    """The kept indices along an axis (``None``: all of them)."""
    root = self.nodes.find(node)
    return self.kept[root] if root in self.kept else self.product_index(root)

  def product_index(self, node) -> np.ndarray | None:
    """A merged axis's indices that its factors keep (else :meth:`index`)."""
    root = self.nodes.find(node)
    factors = self.nodes.factors.get(root)
    if not factors:
      return self.kept.get(root)
    parts = [self.index(f) for f in factors]
    if all(p is None for p in parts):
      return None
    sizes = [self.nodes.size[f] for f in factors]
    parts = [np.arange(s) if p is None else p for p, s in zip(parts, sizes)]
    return np.ravel_multi_index(np.meshgrid(*parts, indexing="ij"), sizes).ravel()

  def _size(self, index, node) -> int:
    return self.nodes.size[self.nodes.find(node)] if index is None else int(index.size)

  def shape(self, labels) -> tuple[int, ...]:
    return tuple(self._size(self.index(n), n) for n in labels)

  def product_shape(self, labels) -> tuple[int, ...]:
    return tuple(self._size(self.product_index(n), n) for n in labels)

  def take(self, value, labels):
    """``value`` (at its full size, or a merged axis at its factors' kept size along
    each axis) at the kept indices."""
    for axis, node in enumerate(labels or ()):
      index = self.index(node)
      n = value.shape[axis]
      if index is None or n == index.size:
        continue
      if n != self.nodes.size[self.nodes.find(node)]:
        index = np.searchsorted(self.product_index(node), index)
      value = jnp.take(value, jnp.asarray(index), axis=axis)
    return value

  def leaf_index(self, labels) -> tuple[np.ndarray | None, ...]:
    return tuple(self.index(n) for n in labels)


#: Element-wise functions whose custom derivative the compacted program keeps.
CUSTOM_DERIVATIVES = (jax.nn.relu, jax.nn.relu6)


@functools.lru_cache(maxsize=256)
def _custom_body(fn, aval) -> str | None:
  """The body of ``fn``'s custom-derivative call at ``aval``, as text."""
  eqns = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(aval.shape, aval.dtype)).jaxpr.eqns
  calls = [e for e in eqns if e.primitive.name == "custom_jvp_call"]
  return str(calls[0].params["call_jaxpr"]) if len(eqns) == len(calls) == 1 else None


class _Interpreter(_Walk):
  """Evaluates the program on the compacted variables, with the shapes of the plan."""

  def __init__(self, program, plan: _Plan):
    super().__init__(program)
    self.plan = plan

  def run_program(self, values):
    inputs = len(self.program.paths)
    values = list(values[:inputs]) + [self.plan.take(x, labels) for x, labels in zip(
        values[inputs:], self.program.in_labels[inputs:])]
    return super().run_program(values)

  def call(self, eqn, ins):
    """Known element-wise functions with custom derivatives (:data:`CUSTOM_DERIVATIVES`),
    recognised by their traced body, are applied again, with their rules."""
    if eqn.primitive.name != "custom_jvp_call" or len(ins) != 1:
      return None
    body = str(eqn.params["call_jaxpr"])
    for fn in CUSTOM_DERIVATIVES:
      if _custom_body(fn, eqn.invars[0].aval) == body:
        return [fn(ins[0])]
    return None

  def constant(self, value, labels):
    return self.plan.take(jnp.asarray(value), labels)

  def literal(self, value):
    return value

  def equation(self, eqn, ins, in_labels, out_labels):
    shapes = [self.plan.shape(labels) for labels in out_labels]
    params = dict(eqn.params)
    name = eqn.primitive.name
    if name == "reshape":
      params.update(new_sizes=self.plan.product_shape(out_labels[0]), dimensions=None)
    elif name == "broadcast_in_dim":
      params["shape"] = shapes[0]
    outs = eqn.primitive.bind(*ins, **params)
    outs = outs if eqn.primitive.multiple_results else [outs]
    outs = [self.plan.take(o, labels) for o, labels in zip(outs, out_labels)]
    for o, shape in zip(outs, shapes):
      if tuple(np.shape(o)) != shape:
        raise AssertionError(f"compaction: {name} gave shape {np.shape(o)}, expected {shape}")
    return outs


@dataclasses.dataclass(frozen=True)
class GroupResult:
  """One group of coupled axes after compaction: how many units it keeps, and which."""
  group: axes.Group
  kept: np.ndarray

  @property
  def removed(self) -> int:
    return self.group.size - int(self.kept.size)


@dataclasses.dataclass(frozen=True, eq=False)
class Compacted:
  """A compacted model (:func:`compact`).

  Attributes:
    variables: the smaller variables, the same tree as the given ones (the masked
      values at the kept indices).
    masks: the masks at the kept indices (``None`` if none were given).
    groups: every group of coupled axes with the units it keeps.
    forward: the original forward pass ``forward(variables, x)``.
    full_shapes: the original variables' shapes.
  """
  variables: Any
  masks: Any
  groups: tuple[GroupResult, ...]
  forward: Callable = dataclasses.field(repr=False)
  full_shapes: Any = dataclasses.field(repr=False)
  leaf_index: dict = dataclasses.field(repr=False)

  def shrink(self, tree, prefix: str = ""):
    """A tree shaped like the variables (``prefix``: the path of its root in them, e.g.
    ``"params"`` for masks or optimiser moments) at the kept indices; ``None`` leaves
    stay ``None``."""
    def take(path, leaf):
      if leaf is None:
        return None
      name = "/".join(filter(None, [prefix, masks_lib.path_str(path)]))
      for axis, index in enumerate(self.leaf_index[name]):
        if index is not None and np.shape(leaf)[axis] != index.size:
          leaf = jnp.take(jnp.asarray(leaf), jnp.asarray(index), axis=axis)
      return leaf
    return jax.tree_util.tree_map_with_path(take, tree, is_leaf=lambda x: x is None)

  def apply(self, variables, x):
    """The compacted model's outputs for ``x`` (any batch size; jit it as usual)."""
    return _compacted_apply(self, jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)))(
        variables, x)

  @property
  def widths(self) -> dict[str, tuple[int, int]]:
    """``{group: (units before, units kept)}`` for each removable group, named by the
    layers whose outputs it indexes (``"Conv_0"``; a residual stream ``"a+b+c"``)."""
    ndim = {masks_lib.path_str(p): len(s.shape) for p, s in
            jax.tree_util.tree_flatten_with_path(self.full_shapes)[0]}
    return {_name(g.group, ndim): (g.group.size, int(g.kept.size)) for g in self.groups
            if g.group.removable}

  def kept_by_member(self) -> dict[axes.Member, np.ndarray]:
    return {m: g.kept for g in self.groups for m in g.group.members if g.removed}


def _name(group: axes.Group, ndim: dict[str, int]) -> str:
  """The layers that produce a group's units (kernels whose last axis it is), else its
  first member."""
  producers = [m.path.removeprefix("params/").removesuffix("/kernel") for m in group.members
               if m.path.endswith("kernel") and m.factor is None and m.axis == ndim[m.path] - 1]
  if producers:
    return "+".join(producers)
  m = group.members[0]
  return f"{m.path}:{m.axis}" + (f"[{m.factor[0]}]" if m.factor else "")


@functools.lru_cache(maxsize=64)
def _program_for(compacted: Compacted, x_struct) -> tuple:
  """The program traced at ``x_struct``'s shape, its kept indices by class, and the
  outputs' tree structure."""
  program = axes.trace(compacted.forward, compacted.full_shapes, x_struct)
  by_member = compacted.kept_by_member()
  kept = {}
  for root, group in program.roots.items():
    found = [by_member[m] for m in group.members if m in by_member]
    if found:
      kept[root] = found[0]
  out_tree = jax.tree.structure(jax.eval_shape(compacted.forward, compacted.full_shapes,
                                               x_struct))
  return program, kept, out_tree


def _compacted_apply(compacted: Compacted, x_struct) -> Callable:
  program, kept, out_tree = _program_for(compacted, x_struct)

  def apply(variables, x):
    interpreter = _Interpreter(program, _Plan(program.nodes, kept))
    return jax.tree.unflatten(out_tree,
                              interpreter.run_program(jax.tree.leaves(variables) + [x]))
  return apply


def kept_indices(program: axes.Program, leaves: Sequence[Any], example, *,
                 gather: bool = True) -> dict:
  """``{root: kept indices}`` (module docstring): for each removable group the units
  that contribute at one of its contractions; for a merged axis (a flattened feature
  map) or an input axis, the indices that its contractions still read once its factors'
  units are gone (they are gathered). Classes with no contraction keep everything."""
  zeros = _ZeroPass(program)
  zeros.run_program([_known(leaf) for leaf in leaves] + [_unknown(np.shape(example))])
  harmless = zeros.harmless()
  nodes = program.nodes
  kept = {root: np.flatnonzero(~harmless[root]) for root, group in program.roots.items()
          if group.removable and root in harmless}
  split = {nodes.find(n) for n in nodes.split}
  plan = _Plan(nodes, kept)
  for root, vector in harmless.items() if gather else ():
    if nodes.why(root) in axes.GATHERABLE and root not in split and root in program.roots:
      index = plan.index(root)
      index = np.arange(vector.size) if index is None else index
      kept[root] = index[~vector[index]]
  return kept


def forward_of(model) -> Callable:
  """The forward pass ``forward(variables, x)`` of a model in evaluation mode.

  ``model`` is a :class:`sparsejax.models.adapter.ModelAdapter`, a linen module,
  or a function ``(variables, x) -> outputs``. For an adapter, ``variables`` is
  ``{"params": params, **model_state}``, with its gates (arrays) under ``"gates"``.
  """
  if isinstance(model, adapter_lib.ModelAdapter):
    def forward(v, x):
      rest = {k: w for k, w in v.items() if k not in ("params", "gates")}
      return model.apply(v["params"], rest, x, train=False, gates=v.get("gates"))[0]
    return forward
  if isinstance(model, nn.Module):
    return lambda v, x: model.apply(v, x, **_eval_kwargs(model))
  if isinstance(model, nnx.Module):
    raise TypeError("compact: adapt an NNX module first (sparsejax.models.adapt)")
  if callable(model):
    return model
  raise TypeError(f"compact: model must be a ModelAdapter, a linen Module or a function "
                  f"(variables, x) -> outputs, got {type(model).__name__}")


def _eval_kwargs(module: nn.Module) -> dict:
  flag, _ = adapter_lib._train_flag(module)
  return {} if flag is None else {flag: adapter_lib._flag_value(flag, False)}


def compact(model, variables, masks=None, *, gates=None, example=None,
            gather: bool = True) -> Compacted:
  """Removes the units that contribute nothing, along their whole coupled groups.

  Args:
    model: a :class:`~sparsejax.models.adapter.ModelAdapter` (any linen or NNX
      model, :func:`sparsejax.models.adapt`), a linen module, or a function
      ``forward(variables, x)``.
    variables: the model's variables: ``{"params": ..., "batch_stats": ...}`` (for an
      adapter ``{"params": params, **model_state}``).
    masks: a mask tree over ``variables["params"]`` (``None`` leaves dense); the
      masked model is compacted.
    gates: an adapter's test-time unit gates ``{site: (units,) array}``; a gate at 0
      removes its unit.
    example: an input batch (only its shape is used); default, one zero input of an
      adapter's ``input_shape``.
    gather: also drop the single positions of a flattened feature map and the input
      features that no contraction reads (the compacted apply gathers the others);
      ``False`` keeps every variable shaped as the same model with smaller widths.

  Returns:
    A :class:`Compacted`: ``compacted.apply(compacted.variables, x)`` equals the
    masked model's outputs.
  """
  variables = dict(variables)
  if masks is not None:
    variables["params"] = masks_lib.apply(masks, variables["params"])
  if gates:
    if not all(hasattr(g, "shape") for g in gates.values()):
      raise ValueError("compact: gates must be arrays (a gate function cannot be compacted)")
    variables["gates"] = dict(gates)
  if example is None:
    if not isinstance(model, adapter_lib.ModelAdapter):
      raise ValueError("compact: give an example input (example=) for a model that is not "
                       "an adapter")
    example = jax.ShapeDtypeStruct((1,) + tuple(model.input_shape), jnp.float32)
  example = jax.ShapeDtypeStruct(np.shape(example), jnp.result_type(example))
  forward = forward_of(model)
  program = axes.trace(forward, variables, example)
  leaves = jax.tree.leaves(variables)
  kept = kept_indices(program, leaves, example, gather=gather)
  plan = _Plan(program.nodes, kept)
  leaf_index = {path: plan.leaf_index(labels)
                for path, labels in zip(program.paths, program.in_labels)}
  groups = tuple(GroupResult(group, kept.get(root, np.arange(group.size)))
                 for root, group in program.roots.items())
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)),
                        variables)
  result = Compacted(None, None, groups, forward, shapes, leaf_index)
  small_masks = None if masks is None else result.shrink(masks, "params")
  return dataclasses.replace(result, variables=result.shrink(variables), masks=small_masks)
