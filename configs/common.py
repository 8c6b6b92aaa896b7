"""What the config files share: the starting config, method tables, BMRS's set-up.

Each ``configs/*.py`` starts from :func:`base` and sets its own fields one by
one; only what several files share lives here:

* :func:`base`: every field at its default
  (:func:`sparsejax.runner.config.base_config`) with the method and the
  experiment name set;
* :func:`set_method_fields`: applies a file's table of per-method
  hyperparameters, and names the methods the file accepts when it has none
  for the one asked;
* :func:`bmrs_appendix_c`, :data:`BMRS_CRITERIA` and :data:`BMRS_INPUTS`:
  what the six BMRS set-ups share (Wright, Igel and Selvan, NeurIPS 2024,
  Appendix C), the criterion argument of ``configs/bmrs_*.py`` and each data
  set's input centring;
* :func:`efficient_compression_mnist_setup`: what ``configs/lenet300_mnist.py``
  and ``configs/lenet5_mnist.py`` share;
* :func:`deephoyer_mnist_setup` and :func:`deephoyer_regulariser`: what the
  two ``configs/deephoyer_*_mnist.py`` share (the DeepHoyer MNIST code's
  set-up, and a regulariser's fields);
* :func:`l0_mnist_setup`: what the two ``configs/l0_*_mnist.py`` share (the
  constrained-sparsity code's MNIST set-up).

Config files import this module as ``from configs import common``, so the
repository root must be on ``sys.path``: run from it
(``python -m sparsejax.main --config=configs/<name>.py``).
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from sparsejax.fields import ConfigError
from sparsejax.runner.config import base_config


def base(method: str, experiment_name: str) -> ml_collections.ConfigDict:
  """Every field at its default, with ``method`` and ``experiment_name`` set.

  Args:
    method: the run's method (checked later, by :func:`set_method_fields`
      and :func:`sparsejax.runner.config.validate`).
    experiment_name: the run's name (its default workdir and result rows).

  Returns:
    A fresh :class:`ml_collections.ConfigDict`.
  """
  config = base_config()
  config.method = method
  config.experiment_name = experiment_name
  return config


def set_fields(config: ml_collections.ConfigDict, fields: Mapping[str, Any]) -> None:
  """Sets each dotted field name of ``fields`` (``"pruning.density"``) in ``config``.

  Raises:
    ConfigError: a name is not a field of ``config``.
  """
  for name, value in fields.items():
    *parents, leaf = name.split(".")
    node = config
    for i, parent in enumerate(parents):
      if parent not in node:
        raise ConfigError(f"config has no field {'.'.join(parents[:i + 1])!r} (setting {name!r})")
      node = node[parent]
    if leaf not in node:
      raise ConfigError(f"config has no field {name!r}")
    node[leaf] = value


def set_method_fields(config: ml_collections.ConfigDict,
                      methods: Mapping[str, Mapping[str, Any]]) -> None:
  """Applies ``methods[config.method]``, a config file's hyperparameters for its method.

  Args:
    config: a config whose ``method`` is set (:func:`base`).
    methods: method -> the dotted fields it sets for this set-up; its keys are
      the methods the config file accepts.

  Raises:
    ConfigError: ``config.method`` is not in ``methods`` (the message names
      the accepted ones, and points BMRS to its own config files), or its
      method family is not registered in :mod:`sparsejax.recipes`.
  """
  from sparsejax.recipes import recipe_names
  method = config.method
  if method not in methods:
    hint = " (method 'bmrs' has its own set-ups: configs/bmrs_*.py)" if method == "bmrs" else ""
    raise ConfigError(f"config field 'method' is {method!r}; accepted values: "
                      f"{', '.join(methods)}{hint}")
  if method not in recipe_names():
    raise ConfigError(f"method {method!r} is not registered in sparsejax.recipes; registered: "
                      f"{', '.join(recipe_names())}")
  set_fields(config, methods[method])


def choose(table: Mapping[str, Any], key: str, what: str) -> Any:
  """``table[key]``; a :class:`ConfigError` names the accepted keys otherwise."""
  if key not in table:
    raise ConfigError(f"unknown {what} {key!r}; accepted values: {', '.join(table)}")
  return table[key]


#: Criterion argument of ``configs/bmrs_*.py`` -> the ``bmrs`` fields it sets
#: (``none``: no pruning, the baseline; ``bmrs_u8``/``bmrs_u4``: BMRS_U with
#: the reduced prior's upper end ``2^-p1``).
BMRS_CRITERIA: dict[str, dict[str, Any]] = {
    "none": {"bmrs.criterion": "none"},
    "snr": {"bmrs.criterion": "snr"},
    "expected_theta": {"bmrs.criterion": "expected_theta"},
    "l2": {"bmrs.criterion": "l2"},
    "bmrs_n": {"bmrs.criterion": "bmrs_n"},
    "bmrs_u8": {"bmrs.criterion": "bmrs_u", "bmrs.p1": 8.0},
    "bmrs_u4": {"bmrs.criterion": "bmrs_u", "bmrs.p1": 4.0},
}


#: Data set -> (``input_offset``, ``input_scale``) of the BMRS set-ups: the
#: released ``train.py``'s input centring, ``(pixel / 255 - offset) / scale``.
BMRS_INPUTS: dict[str, tuple[float, float]] = {
    "mnist": (127 / 255, 1.0),           # (pixel - 127) / 255
    "fashion_mnist": (127 / 255, 1.0),
    "cifar10": (0.5, 0.5),               # (pixel / 255 - 0.5) / 0.5
}


def bmrs_appendix_c(config: ml_collections.ConfigDict, criterion: str, dataset: str) -> None:
  """Sets the fields every BMRS set-up shares (the paper's Appendix C), the data and the criterion.

  The six ``configs/bmrs_<network>_<data>.py`` files are Wright, Igel and
  Selvan, "BMRS: Bayesian Model Reduction for Structured Pruning", NeurIPS
  2024, Appendix C, with the released code (``saintslab/bmrs-structured-pruning``)
  where the paper is silent. The network (the BMRS MLP or LeNet-5) carries a
  log-uniform multiplicative-noise gate on every hidden unit and conv
  channel and trains on the data loss plus the gates' KL; the criterion (the
  files' argument) prunes units during training, then the network is
  finetuned with frozen masks and its best validation epoch is tested.

  Shared: the input image size, the validation share of the official
  training set, Adam without weight decay, a fixed number of training epochs
  (the criterion applied every ``bmrs.compress_epochs``) and of finetuning
  epochs, the evaluation batch, a checkpoint every epoch (a BMRS epoch is
  long), and each data set's input centring (:data:`BMRS_INPUTS`). The
  network, its widths, the batch size and the learning rate are each file's
  own.

  Args:
    config: a config from :func:`base` with method ``"bmrs"``.
    criterion: one of :data:`BMRS_CRITERIA`.
    dataset: one of :data:`BMRS_INPUTS`.

  Raises:
    ConfigError: ``criterion`` or ``dataset`` is not one of the accepted
      values (the message names them).
  """
  fields = choose(BMRS_CRITERIA, criterion, "BMRS criterion")
  config.dataset = dataset
  config.input_offset, config.input_scale = choose(BMRS_INPUTS, dataset, "BMRS data set")
  config.image_size = 32          # every data set resized to image_size x image_size
  config.val_fraction = 0.2       # validation share of the official training set
  config.optimizer = "adam"       # no weight decay
  config.min_epochs = 0
  config.max_epochs = 50
  config.finetuning_min_epochs = 0
  config.finetuning_max_epochs = 10
  config.eval_batch_size = 2000
  config.checkpoint_every_epochs = 1  # a BMRS epoch is long
  set_fields(config, fields)


def efficient_compression_mnist_setup(config: ml_collections.ConfigDict) -> None:
  """The efficient-compression reference's MNIST set-up (Barth & von Petersenn, arXiv 2505.17469).

  Adam 1e-3, batch 500, 300 to 5,000 regularised epochs (convergence checked
  every ``prune_window`` = 10 epochs), at most 1,000 finetuning epochs, no
  shrinking (``ec.shrinking``: pruning during training).
  """
  config.dataset = "mnist"
  config.optimizer = "adam"
  config.lr = 1e-3
  config.train_batch_size = 500
  config.eval_batch_size = 5000
  config.min_epochs = 300
  config.max_epochs = 5000
  config.prune_window = 10
  config.finetuning_max_epochs = 1000
  config.ec.shrinking = False
  config.checkpoint_every_epochs = 10


def sparse_training_mnist_setup(config: ml_collections.ConfigDict) -> None:
  """The sparse-training baselines' MNIST set-up (``sparsejax.recipes.sparse_training``).

  The papers give no set-up for these networks (RigL, SET and SR-STE report
  CIFAR and ImageNet; Zhu & Gupta, Inception and LSTMs), so it is the usual
  LeNet one, chosen here and run the same way for jaxpruner
  (``benchmarks/peers/jaxpruner_mnist.py``): Adam 1e-3, batch 100, 55,000
  training and 5,000 validation images, kernels pruned (biases dense, as
  jaxpruner), the final state after ``max_epochs`` epochs. The papers'
  schedule hyperparameters: updates every 100 steps (RigL's Delta T), drop
  fraction 0.3 with cosine decay (RigL; SET's zeta = 0.3), updates until 75 %
  of training (RigL's T_end; Zhu & Gupta's end of pruning), ERK budget.
  """
  config.dataset = "mnist"
  config.val_fraction = 1 / 12
  config.prunable = "kernels"
  config.optimizer = "adam"
  config.lr = 1e-3
  config.train_batch_size = 100
  config.eval_batch_size = 5000
  config.checkpoint_every_epochs = 1


#: The sparse-training methods (``sparsejax.recipes.sparse_training``) -> the fields each
#: sets beyond the shared set-up: the straight-through methods recompute their masks
#: from the dense weights at every step (Zhou et al., 2021; jaxpruner's STE does too),
#: and SR-STE is an N:M method.
SPARSE_TRAINING_METHODS = {
    "gmp": {}, "random": {}, "saliency": {}, "snip": {},
    "ste": {"sparse.schedule": "periodic", "sparse.frequency": 1, "sparse.end_fraction": 1.0},
    "sr_ste": {"sparse.structure": "2:4", "pruning.density": 0.5, "sparse.schedule": "periodic",
               "sparse.frequency": 1, "sparse.end_fraction": 1.0},
    "static": {}, "set": {}, "rigl": {},
}


def sparse_training(method: str, architecture: str, epochs: int,
                    name: str) -> ml_collections.ConfigDict:
  """A sparse-training config: :func:`sparse_training_mnist_setup` for ``architecture``,
  ``epochs`` epochs, 90 % sparsity with the ERK budget, ``method``'s fields; the
  experiment is ``sparse_training_<name>_mnist_<method>``."""
  config = base(method, f"sparse_training_{name}_mnist_{method}")
  sparse_training_mnist_setup(config)
  config.architecture = architecture
  config.max_epochs = config.min_epochs = epochs
  config.prune_window = 5
  config.pruning.density = 0.1
  config.sparse.distribution = "erk"
  set_method_fields(config, SPARSE_TRAINING_METHODS)
  return config


def deephoyer_mnist_setup(config: ml_collections.ConfigDict) -> None:
  """The DeepHoyer MNIST code's set-up (reference notes, section 1.3), shared with its baselines.

  Adam 1e-3, batch 100, 250 regularised epochs, then 50 finetuning epochs.
  The reference trains on all 60,000 training images and picks the finetuning
  epoch on the test set; here 5,000 of them (1/12) are held out for that
  choice and the other 55,000 train.
  """
  config.dataset = "mnist"
  config.val_fraction = 1 / 12
  config.optimizer = "adam"
  config.lr = 1e-3
  config.train_batch_size = 100
  config.max_epochs = 250
  config.min_epochs = 250
  config.prune_window = 10
  config.finetuning_max_epochs = 50
  config.finetuning_min_epochs = 50
  config.checkpoint_every_epochs = 10


def deephoyer_regulariser(config: ml_collections.ConfigDict, regulariser: str, decay: float,
                          sensitivity: float) -> None:
  """DeepHoyer's ``regulariser`` at ``decay``, pruned by the std rule at ``sensitivity``, finetuned.

  As the reference code: every tensor regularised (``element.py`` regularises
  the biases too), weight decay 1e-4 beside the group regularisers only, and
  the finetuning under a fresh Adam 1e-3 with weight decay 1e-4.
  """
  config.deephoyer.regulariser = regulariser
  config.deephoyer.decay = decay
  config.deephoyer.tensors = "all"
  config.deephoyer.weight_decay = 1e-4 if regulariser.startswith("group") else 0.0
  config.deephoyer.rule = "std"
  config.deephoyer.sensitivity = sensitivity
  config.deephoyer.finetune_lr = 1e-3
  config.deephoyer.finetune_weight_decay = 1e-4


def l0_mnist_setup(config: ml_collections.ConfigDict, formulation: str) -> None:
  """The constrained-sparsity code's MNIST set-up (reference notes, section 3.1).

  Adam 7e-4 for the weights and the gates, SGD 1e-4 for the multipliers,
  batch 128, 200 epochs, no weight decay, the median test gate, dual restarts;
  the code's MNIST inputs, ``(pixel / 255 - 0.1307) / 0.3081``. The initial
  weights stay Flax's: the code's He-normal ones (``l0.weight_init="kaiming"``)
  cost half a point of test error at a target of 0.8 (docs/results/l0.md). The
  reference trains on all 60,000 training images and reports the final
  epoch's test error; here 1,000 are held out to watch validation curves,
  and none is used to select.
  """
  config.val_fraction = 1 / 60   # 59,000 train / 1,000 validation (the reference trains on 60,000)
  config.input_offset = 0.1307   # torchvision's MNIST mean and standard deviation
  config.input_scale = 0.3081
  config.optimizer = "adam"
  config.lr = 7e-4
  config.train_batch_size = 128
  config.eval_batch_size = 5000
  config.max_epochs = 200
  config.min_epochs = 200
  config.prune_window = 10
  config.checkpoint_every_epochs = 10
  config.l0.formulation = formulation
  config.l0.gates_lr = 7e-4
  config.l0.dual_lr = 1e-4
  config.l0.weight_decay = 0.0
  config.l0.test_gate = "median"
  config.l0.dual_restarts = True


def comparison(name: str, title: str, network: str, dataset: str) -> ml_collections.ConfigDict:
  """The fields of a ``configs/compare_*.py`` study (:mod:`sparsejax.studies.compare`),
  with an empty method table (:func:`compare_method` fills it).

  The protocol: the official test split; 1/12 of the training split (5,000 images) for
  validation; pixels scaled to [0, 1] at their native size (every family's own input
  centring overridden); 30 epochs for a method's whole procedure; 3 seeds per point.
  """
  config = ml_collections.ConfigDict()
  config.name = name
  config.title = title
  config.network = network
  config.model = ""         # your own model, 'package.module:Class' (replaces network)
  config.model_kwargs = ""  # its constructor arguments, a Python dict literal
  config.workdir = f"workdirs/{name}"
  config.epochs = 30
  config.densities = (0.1, 0.05, 0.02)
  config.seeds = 3
  config.seed = 42
  config.only = ""
  config.quiet = True
  config.protocol = ml_collections.ConfigDict({
      "dataset": dataset, "manual_dir": "", "val_fraction": 1 / 12, "image_size": 0,
      "input_offset": 0.0, "input_scale": 1.0, "train_set_size": 0, "val_set_size": 0,
      "test_set_size": 0})
  config.methods = ml_collections.ConfigDict()
  return config


def compare_method(config: ml_collections.ConfigDict, label: str, source: str, kind: str,
                   field: str = "", strengths: tuple = (), as_tuple: bool = False,
                   epochs: tuple = (("max_epochs", 1.0),),
                   fields: Mapping[str, Any] | None = None) -> None:
  """Adds a method to a comparison's table.

  Args:
    config: a :func:`comparison` config.
    label: the method's name in the table (and its runs' ``experiment_name`` suffix).
    source: ``"<config module>:<argument>"`` under ``configs/``: the family's set-up.
    kind: how the operating point sets ``field`` (``density``, ``sparsity``,
      ``strength`` over ``strengths``, or ``fixed``: no knob);
      :data:`sparsejax.studies.compare.KINDS`.
    field: the operating point's dotted field.
    strengths: the strength grid (``kind="strength"``).
    as_tuple: the field holds a tuple (one value per layer group): set ``(value,)``.
    epochs: ``(field, share)`` pairs: how the study's epoch budget splits over the
      method's phases.
    fields: other dotted fields the method sets.
  """
  config.methods[label] = ml_collections.ConfigDict({
      "source": source, "kind": kind, "field": field, "strengths": tuple(strengths),
      "as_tuple": as_tuple, "epochs": tuple(epochs),
      "fields": tuple((fields or {}).items())})
