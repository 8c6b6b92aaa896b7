"""The experiment schema: every config field, its default and its checks.

A config is the run's fields (data, model, optimiser, phases, pruning,
seeds, bookkeeping), defined here, plus the fields each method family adds
(its :class:`~sparsejax.recipes.Recipe`'s ``defaults()``, each in its own
sub-dict: the efficient-compression family's ``ec`` (``ec.alpha``,
``ec.beta``, ...), BMRS's ``bmrs``, magnitude pruning's ``magnitude``).
:func:`base_config` holds all of them, so any config file can name any
field; a run's id and its result row use the run fields and its own
family's (:func:`relevant_fields`), so adding a family changes no existing
run id.
Field names follow the efficient-compression reference's ``TrainArgs``
where one applies (``min_epochs``, ``prune_window``, ...) and its defaults
(``src/TrainArgs.jl``) unless noted.

:func:`validate` runs before any compute: an unknown field, a value of the
wrong type, or a value outside its accepted set is a
:class:`~sparsejax.fields.ConfigError` that names the field and what it
accepts; then the method's recipe checks its own (with the same helpers,
:mod:`sparsejax.fields`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import ml_collections

from sparsejax import masks as masks_lib
from sparsejax.fields import ConfigError, choice, flatten, require
from sparsejax.models import capabilities as caps
from sparsejax.models import registry
from sparsejax.train import convergence
from sparsejax.train.optimizers import OPTIMIZERS

ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu", "identity")
PRUNING = ("none", "tamade", "description_length", "global_density", "global_threshold")
CALIBRATION = ("train", "val")
PRUNABLE = tuple(masks_lib.NAMED_PRUNABLE)
DTYPES = ("float32", "float64", "bfloat16")
#: Integer fields fit int32 (epochs and seeds become int32 arrays).
INT_RANGE = (-(2 ** 31), 2 ** 31 - 1)
#: An experiment name: it names run ids, files and folders in the workdir.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


#: A model import path, ``package.module:Attr``.
IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*")
#: ``host:port`` of the ``jax.distributed`` coordinator.
ADDRESS = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}")


#: Fields that do not change what a run computes: left out of its id.
BOOKKEEPING_FIELDS = ("quiet", "checkpoint_every_epochs", "anneal.checkpoint_levels",
                      "anneal.chain_loop", "seeds",
                      "sweep.chunk_size",
                      "sweep.seed_loop", "sweep.num_sub_batches", "sweep.sub_batch", "download", "data_dir",
                      "manual_dir", "parallel", "distributed.coordinator_address",
                      "distributed.num_processes", "distributed.process_id")
#: Run fields added after runs were recorded, at the values that change nothing: left
#: out of a run's id while they hold them, so earlier runs keep their ids.
NEUTRAL_FIELDS = {"model": "", "model_kwargs": "", "ec.strength": "fixed", "ec.bits_scale": 1.0,
                  "pruning.bits_scale": 1.0}
#: Fields renamed or moved since runs were recorded, old dotted name -> new: a saved
#: ``config.json`` is read under the new names (:func:`renamed`; ``load_run``, the
#: ``rerun`` study). The efficient-compression family's fields were top-level.
_EC_MOVED = ("alpha", "rho", "beta", "norm", "layer_norm", "l1_alpha", "initial_p_value",
             "initial_u_value", "u_value_multiply_factor", "gauss_loss",
             "layerwise_pruning_alpha", "layerwise_pruning_lr",
             "layerwise_pruning_mask_start_value", "layerwise_pruning_max_epochs", "shrinking",
             "shrinking_from_deviation_of")
RENAMED_FIELDS = {"bmrs.n_layers": "hidden_layers", "bmrs.hidden_dim": "hidden_dim",
                  **{name: f"ec.{name}" for name in _EC_MOVED}}
#: Fields a run's id hashes under their names before a move that changed nothing they
#: compute (the efficient-compression fields' move into ``ec``), so earlier runs keep
#: their ids and their workdirs resume.
ID_NAMES = {f"ec.{name}": name for name in _EC_MOVED}
#: Fields only the teacher-student problem reads (``dataset = teacher_student``).
TEACHER_STUDENT_FIELDS = ("noise", "architecture_teacher")
#: Fields only classification data sets read (every ``dataset`` but teacher_student).
CLASSIFICATION_FIELDS = ("image_size", "val_fraction", "input_offset", "input_scale",
                         "data_dir", "manual_dir", "download")
#: How a program spreads over the local devices (``parallel``).
PARALLEL = ("auto", "data", "seeds")
#: How a program runs its seeds (``sweep.seed_loop``; ``sparsejax.train.driver.SEED_LOOPS`` or auto).
SEED_LOOPS = ("auto", "vmap", "map")


class MissingCapability(ConfigError):
  """The config's method needs a capability its model lacks (said before any training)."""


def run_fields() -> ml_collections.ConfigDict:
  """The fields every run has, whatever its method, with their defaults."""
  c = ml_collections.ConfigDict()
  c.experiment_name = "experiment"
  c.seed = 42
  c.dtype = "float32"  # or "float64"; "bfloat16": CNNs compute in bfloat16, parameters float32

  # Data.
  c.dataset = "teacher_student"  # or mnist, fashion_mnist, cifar10, tiny_imagenet, npz:PATH
                               # (own arrays) or a tensorflow-datasets name
  c.data_dir = ""            # tfds data_dir for prepared data sets ("" = tfds default)
  c.manual_dir = ""          # folder with the original archives ("" = $SPARSEJAX_DATA_DIR/<dataset>)
  c.download = False         # let tensorflow-datasets download a data set it cannot find
  c.train_set_size = 0       # 0 = the whole split
  c.val_set_size = 0
  c.test_set_size = 0
  c.noise = 0.08             # teacher-student: standard deviation of the target noise
  c.architecture_teacher = (2, 5, 8, 1)
  c.image_size = 0           # resize images to image_size^2 (0 = native size; BMRS uses 32)
  c.val_fraction = 0.0       # > 0: validation share of the official training set, the rest
                             # trains (BMRS: 0.2); 0: 5,000 val / 45,000 train images
  c.input_offset = 0.0       # images become (x - input_offset) / input_scale, x in [0, 1]
  c.input_scale = 1.0

  # Model.
  c.architecture = "mlp"      # a registered model (sparsejax.models.registry)
  c.model = ""               # your own model, 'package.module:Class' (overrides architecture)
  c.model_kwargs = ""        # its constructor arguments, a Python dict literal "{'width': 64}"
  c.architecture_student = (2, 25, 25, 1)
  c.activation = "tanh"
  c.init_from = ""           # WORKDIR[:RUN_ID]: start from a finished run's final parameters
  c.hidden_layers = 5        # bmrs_mlp: hidden Linear(h, h) layers after the first
  c.hidden_dim = 50          # bmrs_mlp: hidden width

  # Method and optimiser (the method's own fields come from its recipe).
  c.method = "none"
  c.optimizer = "adam"
  c.lr = 1e-3
  c.train_batch_size = 0     # 0 = full batch
  c.eval_batch_size = 1000

  # Phases.
  c.min_epochs = 10
  c.max_epochs = 20000
  c.prune_window = 10        # epochs per compiled chunk and between checks
  c.smoothing_window = 30
  c.finetuning_min_epochs = 33
  c.finetuning_max_epochs = 10000
  c.converge_val_loss = True     # convergence on the validation loss (else the train loss)
  c.return_best_state = True     # a phase returns its best validation check if the end is worse

  # Pruning after the regularised phase: random gradient pruning ->
  # criterion -> random gradient pruning (-> neuron deletion); magnitude
  # pruning prunes to ``density``.
  c.pruning = ml_collections.ConfigDict()
  c.pruning.criterion = "tamade"
  c.pruning.tolerated_relative_loss_increase = 0.01
  c.pruning.binary_search_resolution = 1e-7
  c.pruning.calibration = "train"  # TAMADE's data: train (the paper) or val (the later code)
  c.pruning.bits_scale = 1.0       # description_length: bits per kept parameter / (log2(N)/2)
  c.pruning.density = 1.0          # global_density, and magnitude pruning's target
  c.pruning.threshold = 0.0        # global_threshold
  c.pruning.random_gradient_pruning = True
  c.pruning.delete_neurons = False  # MLPs, LeNet-5: fold units without inputs into the next bias
  c.prunable = "all"

  # Seeds: seeds > 1 runs seeds seed, seed + 1, ..., seed + seeds - 1 as
  # vmapped programs of chunk_size seeds; a SLURM array task runs its
  # sub_batch (0-based) of num_sub_batches contiguous parts of them.
  c.seeds = 1
  c.sweep = ml_collections.ConfigDict()
  c.sweep.chunk_size = 64
  c.sweep.num_sub_batches = 1
  c.sweep.sub_batch = 0
  # How a program runs its seeds: "vmap" vectorises them, "map" runs them one
  # after another inside the program; "auto" is "map" on a CPU for a model
  # with 2-D convolutions (vmapped, their kernels become grouped
  # convolutions, which XLA:CPU runs more slowly: a 3-seed BMRS LeNet-5 epoch
  # took twice as long) and "vmap" otherwise.
  c.sweep.seed_loop = "auto"

  # Devices: "data" splits every batch over the local devices (parameters
  # replicated), "seeds" splits the seed axis; "auto" is "seeds" for the
  # teacher-student problems (full-batch, per-seed data) and on a CPU (one
  # device per core: a vmapped sweep's seeds spread over the cores, one seed
  # or a mapped sweep stays on one device), "data" on accelerators and over
  # several processes.
  c.parallel = "auto"
  # Processes (sparsejax.runner.hosts): under SLURM with more than one task
  # nothing needs setting; other launchers start num_processes copies of the
  # command, each with its process_id and the coordinator's host:port.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 1
  c.distributed.process_id = 0

  # Bookkeeping.
  c.checkpoint_every_epochs = 100
  c.quiet = False
  return c


def base_config() -> ml_collections.ConfigDict:
  """Every field with its default: the run fields and every registered family's."""
  from sparsejax.recipes import registered
  c = run_fields()
  for recipe in registered():
    for name, value in recipe.defaults().items():
      if name in c and _plain(c[name]) != _plain(value):
        raise ValueError(f"recipe {recipe.name!r} redefines field {name!r} differently")
      c[name] = value
  return c


def _plain(value):
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def renamed(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config (nested dicts, as ``config.json``) with its fields under today's
  names (:data:`RENAMED_FIELDS`)."""
  out: dict[str, Any] = {}
  for name, value in flatten(saved).items():
    *parents, leaf = RENAMED_FIELDS.get(name, name).split(".")
    node = out
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return out


def relevant_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The flat fields of ``config`` that its run depends on: the run fields and its
  method's (the columns of its result row)."""
  from sparsejax.recipes import get_recipe
  names = set(flatten(run_fields()))
  defaults = ml_collections.ConfigDict(get_recipe(config.method).defaults())
  names |= set(flatten(defaults))
  return {k: v for k, v in flatten(config).items() if k in names}


def field_names() -> list[str]:
  """Dotted names of every valid field."""
  return sorted(flatten(base_config()))


def check_field_name(name: str, known: list[str] | None = None) -> None:
  """Raises :class:`ConfigError` unless ``name`` is a valid dotted field (one of
  ``known``, by default :func:`field_names`)."""
  known = field_names() if known is None else known
  if name not in known:
    raise ConfigError(f"unknown config field {name!r}; valid fields: {', '.join(known)}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of ``config`` before any compute: types, the run fields,
  then the method's recipe (``Recipe.validate``)."""
  from sparsejax.recipes import get_recipe, recipe_names
  flat = flatten(config)
  defaults = flatten(base_config())
  known = sorted(defaults)
  for name in flat:
    check_field_name(name, known)
  for name, default in defaults.items():
    if name not in flat:
      raise ConfigError(f"config has no field {name!r}; start configs from base_config()")
    value = flat[name]
    if isinstance(default, bool):
      require(isinstance(value, bool), name, value, "true or false")
    elif isinstance(default, int):
      require(isinstance(value, int) and not isinstance(value, bool), name, value, "an integer")
      require(INT_RANGE[0] <= value <= INT_RANGE[1], name, value,
              f"an integer in [{INT_RANGE[0]}, {INT_RANGE[1]}]")
    elif isinstance(default, float):
      require(isinstance(value, (int, float)) and not isinstance(value, bool), name, value, "a number")
      require(math.isfinite(value), name, value, "a finite number (not NaN or infinity)")
    elif isinstance(default, str):
      require(isinstance(value, str), name, value, "a string")
    elif isinstance(default, (tuple, list)) and any(isinstance(v, float) for v in default):
      require(isinstance(value, (tuple, list)) and len(value) > 0 and all(
          isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          for v in value), name, value, "a list of finite numbers, e.g. '(0.3, 0.5)'")
    elif isinstance(default, (tuple, list)):
      require(isinstance(value, (tuple, list)) and all(
          isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= INT_RANGE[1]
          for v in value), name, value, "a list of positive integers, e.g. '(2, 25, 25, 1)'")
  require(NAME.fullmatch(config.experiment_name) is not None, "experiment_name",
          config.experiment_name, "1 to 100 letters, digits, '_', '-' or '.', starting with a "
          "letter or digit (it names files in the workdir)")
  require(0 <= config.seed and config.seed + config.seeds <= INT_RANGE[1], "seed", config.seed,
          f"in [0, {INT_RANGE[1]} - seeds]")
  for name, accepted in [("architecture", tuple(registry.model_names())),
                         ("activation", ACTIVATIONS), ("method", tuple(recipe_names())),
                         ("optimizer", OPTIMIZERS), ("pruning.criterion", PRUNING),
                         ("prunable", PRUNABLE), ("dtype", DTYPES),
                         ("pruning.calibration", CALIBRATION), ("parallel", PARALLEL),
                         ("sweep.seed_loop", SEED_LOOPS)]:
    choice(config, name, accepted)
  require(config.lr > 0, "lr", config.lr, "> 0")
  for name in ("noise", "pruning.threshold", "pruning.tolerated_relative_loss_increase"):
    require(flat[name] >= 0, name, flat[name], ">= 0")
  require(0 < config.pruning.density <= 1, "pruning.density", config.pruning.density, "in (0, 1]")
  require(config.pruning.bits_scale > 0, "pruning.bits_scale", config.pruning.bits_scale, "> 0")
  require(config.pruning.binary_search_resolution > 0, "pruning.binary_search_resolution",
          config.pruning.binary_search_resolution, "> 0")
  for name in ("train_set_size", "val_set_size", "test_set_size", "train_batch_size", "min_epochs",
               "finetuning_min_epochs", "hidden_layers"):
    require(flat[name] >= 0, name, flat[name], ">= 0")
  require(config.smoothing_window >= convergence.MIN_WINDOW, "smoothing_window",
          config.smoothing_window, f">= {convergence.MIN_WINDOW} (the saturation test splits "
          "the window into two halves and fits a local line to each, which needs 3 points)")
  for name in ("eval_batch_size", "prune_window", "checkpoint_every_epochs",
               "seeds", "sweep.chunk_size", "sweep.num_sub_batches", "hidden_dim"):
    require(flat[name] >= 1, name, flat[name], ">= 1")
  require(config.max_epochs >= config.min_epochs, "max_epochs", config.max_epochs,
          f">= min_epochs ({config.min_epochs})")
  require(config.finetuning_max_epochs >= config.finetuning_min_epochs, "finetuning_max_epochs",
          config.finetuning_max_epochs, f">= finetuning_min_epochs ({config.finetuning_min_epochs})")
  require(len(config.architecture_student) >= 2, "architecture_student",
          config.architecture_student, "a list of >= 2 positive integers")
  if config.model:
    require(config.model in registry.model_names() or IMPORT_PATH.fullmatch(config.model),
            "model", config.model, "'' (the registered config.architecture), a registered model "
            f"({', '.join(registry.model_names())}) or 'package.module:Class' (your own)")
  if config.dataset == "teacher_student":
    teacher, student = list(config.architecture_teacher), list(config.architecture_student)
    require(len(teacher) >= 2, "architecture_teacher", teacher,
            "a list of >= 2 positive integers (input, hidden..., output widths)")
    require(student[0] == teacher[0] and student[-1] == teacher[-1], "architecture_student",
            student, f"a list whose first and last widths are the teacher's inputs and outputs "
            f"({teacher[0]} and {teacher[-1]}, from architecture_teacher)")
  name = model_name(config)
  if config.dtype == "bfloat16":
    require("mixed_precision" in registry.capabilities_of(name), "dtype", config.dtype,
            "'float32' or 'float64' unless the model has capability 'mixed_precision' "
            f"({caps.CAPABILITIES['mixed_precision']})")
  if config.pruning.delete_neurons:
    require("deletable_units" in registry.capabilities_of(name), "pruning.delete_neurons", True,
            "false unless the model has capability 'deletable_units' "
            f"({caps.CAPABILITIES['deletable_units']})")
  require(config.sweep.num_sub_batches <= config.seeds, "sweep.num_sub_batches",
          config.sweep.num_sub_batches, f"<= seeds ({config.seeds}): every task needs a seed")
  require(0 <= config.sweep.sub_batch < config.sweep.num_sub_batches, "sweep.sub_batch",
          config.sweep.sub_batch, f"in [0, sweep.num_sub_batches = {config.sweep.num_sub_batches})")
  distributed = config.distributed
  if not distributed.coordinator_address:
    for name in ("num_processes", "process_id"):
      require(distributed[name] == int(name == "num_processes"), f"distributed.{name}",
              distributed[name], f"{int(name == 'num_processes')} without "
              "distributed.coordinator_address: the run is then one process (or SLURM's "
              "tasks); set distributed.coordinator_address='host:port' to start several")
  if distributed.coordinator_address:
    require(ADDRESS.fullmatch(distributed.coordinator_address) is not None,
            "distributed.coordinator_address", distributed.coordinator_address,
            "'host:port' (e.g. 'node001:1234'), or '' for one process or SLURM")
  require(distributed.num_processes >= 1, "distributed.num_processes",
          distributed.num_processes, ">= 1")
  require(0 <= distributed.process_id < distributed.num_processes, "distributed.process_id",
          distributed.process_id, f"in [0, distributed.num_processes = "
          f"{distributed.num_processes})")
  require(config.image_size >= 0, "image_size", config.image_size, ">= 0 (0 = native size)")
  require(config.input_scale > 0, "input_scale", config.input_scale, "> 0")
  require(0 <= config.val_fraction < 1, "val_fraction", config.val_fraction,
          "in [0, 1) (0 = the default 5,000 validation images)")
  check_fields_in_effect(config)
  check_dataset(config)
  get_recipe(config.method).validate(config)  # names the family's fields before the model is built
  check_model(config)


def check_fields_in_effect(config: ml_collections.ConfigDict) -> None:
  """A field the run does not read must hold its default.

  Another method family's fields (``magnitude.scope`` under ``method=drr``)
  and the fields of the other kind of data (``image_size`` for the
  teacher-student problem, ``noise`` for MNIST) would change nothing: a
  value there is a mistake (a wrong method, a field of the wrong family), so
  it is an error naming the field, why it has no effect, and its default.

  Raises:
    ConfigError: such a field differs from its default.
  """
  from sparsejax.recipes import get_recipe, registered
  flat, defaults = flatten(config), flatten(run_fields())
  own = set(flatten(ml_collections.ConfigDict(get_recipe(config.method).defaults())))
  owners: dict[str, list[str]] = {}
  for recipe in registered():
    for name, default in flatten(ml_collections.ConfigDict(recipe.defaults())).items():
      if name not in own:
        owners.setdefault(name, []).append(recipe.name)
        defaults[name] = default
  for name, methods in owners.items():
    require(_plain_value(flat[name]) == _plain_value(defaults[name]), name, flat[name],
            f"left at its default {defaults[name]!r}: it has no effect under method "
            f"{config.method!r} (it is read by method {', '.join(methods)})")
  teacher_student = config.dataset == "teacher_student"
  unread = CLASSIFICATION_FIELDS if teacher_student else TEACHER_STUDENT_FIELDS
  reader = "classification data sets" if teacher_student else "dataset 'teacher_student'"
  for name in unread:
    require(_plain_value(flat[name]) == _plain_value(defaults[name]), name, flat[name],
            f"left at its default {defaults[name]!r}: it has no effect with dataset "
            f"{config.dataset!r} (only {reader} read it)")


def _plain_value(value):
  """Lists and tuples compare equal (a list field set on the command line is a tuple)."""
  return list(value) if isinstance(value, (tuple, list)) else value


def check_dataset(config: ml_collections.ConfigDict) -> None:
  """``dataset`` is ``teacher_student`` or a classification data set that can be read
  as asked (``val_fraction``, ``image_size``): one of
  :data:`sparsejax.data.IMAGE_DATASETS`, ``npz:PATH`` or a tensorflow-datasets name
  (:func:`sparsejax.data.dataset_info`). An ``.npz`` file is checked from its array
  headers and labels, a tensorflow-datasets data set from its builder, before any
  data is read."""
  from sparsejax import data
  if config.dataset == "teacher_student":
    return
  try:
    info = data.dataset_info(config.dataset, data_dir=config.data_dir or None,
                             download=config.download)
    data.check_options(info, val_fraction=config.val_fraction, image_size=config.image_size)
  except data.UnknownDatasetError as error:
    raise ConfigError(f"config field 'dataset' is {config.dataset!r}; accepted values: "
                      f"teacher_student, {data.ACCEPTED_FORMS} ({error.reason})") from None
  except data.DatasetError as error:
    raise ConfigError(f"config field 'dataset' is {config.dataset!r}: {error}") from None


def model_name(config: ml_collections.ConfigDict) -> str:
  """The run's model: ``config.model`` (a registered name, or your own as
  ``package.module:Class``) if set, else the registered ``config.architecture``."""
  return config.model or config.architecture


def model_field(config: ml_collections.ConfigDict) -> str:
  """The field that names the run's model: ``model`` if set, else ``architecture``."""
  return "model" if config.model else "architecture"


def check_model(config: ml_collections.ConfigDict) -> None:
  """The model builds, takes the data's inputs, gives one output per class (or target),
  and has every capability the method asks of it (``Recipe.check_model``): checked on
  shapes alone (``jax.eval_shape``), before any data is read."""
  import jax
  from sparsejax.recipes import get_recipe
  from sparsejax.runner import build
  field, name = model_field(config), model_name(config)
  spec = build.model_spec(config)
  where = (f"{config.dataset} inputs of shape {'x'.join(map(str, spec.input_shape))}"
           + (f" (image_size={config.image_size})" if config.image_size else ""))
  kwargs = build.model_kwargs(config)
  try:
    model = registry.build(name, spec, kwargs)
    sample = jax.ShapeDtypeStruct((1, *spec.input_shape), spec.param_dtype)
    params, state = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), sample)
    out = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=False)[0], params, state,
                         sample)
  except Exception as error:  # noqa: BLE001  (any error of any model)
    raise ConfigError(f"config field {field!r} is {name!r}; it cannot take {where}: "
                      f"{type(error).__name__}: {str(error).splitlines()[0][:300]}") from None
  require(out.shape == (1, spec.num_classes), field, name,
          f"a model with {spec.num_classes} outputs for {config.dataset} (it gives "
          f"{out.shape[1:]})")
  try:
    get_recipe(config.method).check_model(config, model)
  except caps.CapabilityError as error:
    raise MissingCapability(f"config field {field!r} is {name!r}: {error}") from None
