"""Optimisers by name: the one factory every recipe builds its optimisers with.

``build_optimizer(name, lr)`` is optax's Adam (Kingma and Ba, 2015), SGD
(with optional heavy-ball momentum) or Adadelta (Zeiler, 2012) with
PyTorch's defaults, ``rho = 0.9`` and ``eps = 1e-6``. ``weight_decay`` is
PyTorch's coupled decay: ``weight_decay * w`` is added to the gradient
before the optimiser sees it (``g <- g + wd * w``), not AdamW's decoupled
decay.
"""

from __future__ import annotations

import optax

#: The optimiser names :func:`build_optimizer` accepts.
OPTIMIZERS = ("adam", "sgd", "adadelta")


def build_optimizer(name: str, lr: optax.ScalarOrSchedule, *, momentum: float = 0.0,
                    weight_decay: float = 0.0) -> optax.GradientTransformation:
  """The optimiser ``name`` at learning rate ``lr``.

  Args:
    name: one of :data:`OPTIMIZERS`.
    lr: the learning rate, a number or an optax schedule of the step.
    momentum: SGD's momentum (0: none); only ``"sgd"`` takes one.
    weight_decay: coupled weight decay (0: none): ``g + weight_decay * w``
      goes to the optimiser.

  Returns:
    The ``optax.GradientTransformation``; without weight decay, optax's own
    (``optax.adam(lr)``, ``optax.sgd(lr)``, ``optax.adadelta(lr, rho=0.9,
    eps=1e-6)``), so its state is optax's.

  Raises:
    ValueError: ``name`` is not one of :data:`OPTIMIZERS`, or ``momentum`` is
      set for an optimiser other than SGD.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer is {name!r}; accepted values: {', '.join(OPTIMIZERS)}")
  if momentum and name != "sgd":
    raise ValueError(f"momentum is {momentum!r}; it must be 0 for optimizer {name!r} "
                     "(only 'sgd' takes a momentum)")
  if name == "adam":
    base = optax.adam(lr)
  elif name == "adadelta":
    base = optax.adadelta(lr, rho=0.9, eps=1e-6)
  else:
    base = optax.sgd(lr, momentum=momentum or None)
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), base)
  return base
