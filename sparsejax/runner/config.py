"""The experiment schema: every config field, its default and its checks.

Configs in ``configs/*.py`` start from :func:`base_config` and change fields;
they never add any. Field names follow the efficient-compression reference's
``TrainArgs`` where one applies (``alpha``, ``beta``, ``rho``, ``min_epochs``,
``prune_window``, ...), and its defaults (``src/TrainArgs.jl``) unless noted.

:func:`validate` runs before any compute: an unknown field, a value of the
wrong type, or a value outside its accepted set is a :class:`ConfigError` that
names the field and what it accepts.
"""

from __future__ import annotations

from typing import Any

import ml_collections

DATASETS = ("teacher_student", "mnist", "fashion_mnist", "cifar10", "tiny_imagenet")
ARCHITECTURES = ("mlp", "lenet_300_100", "lenet5_caffe", "vgg16_bn", "bmrs_mlp", "bmrs_lenet5",
                 "resnet18", "resnet50", "vit_small", "vit_b16")
ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu", "identity")
METHODS = ("none", "rl1", "drr", "pmmp", "layerwise", "bmrs")
BMRS_CRITERIA = ("none", "snr", "expected_theta", "l2", "bmrs_n", "bmrs_u")
BMRS_CONVENTIONS = ("paper", "code")
KL_REDUCTIONS = ("mean", "sum")
KL_WEIGHTS = ("one", "inverse_n_train")
GATE_NOISE = ("per_element", "per_batch")
OPTIMIZERS = ("adam", "sgd")
PRUNING = ("none", "tamade", "global_density", "global_threshold")
CALIBRATION = ("train", "val")
PRUNABLE = ("all", "kernels")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
  """A config field is unknown or has a value outside its accepted set."""


def base_config() -> ml_collections.ConfigDict:
  """All fields with their defaults (the reference's TrainArgs where it has one)."""
  c = ml_collections.ConfigDict()
  c.experiment_name = "experiment"
  c.seed = 42
  c.dtype = "float32"

  # Data.
  c.dataset = "teacher_student"
  c.data_dir = ""            # tfds data_dir for prepared data sets ("" = tfds default)
  c.manual_dir = ""          # folder with the original archives ("" = $SPARSEJAX_DATA_DIR/<dataset>)
  c.train_set_size = 0       # 0 = the whole split
  c.val_set_size = 0
  c.test_set_size = 0
  c.noise = 0.08             # teacher-student: standard deviation of the target noise
  c.architecture_teacher = [2, 5, 8, 1]
  c.image_size = 0           # resize images to image_size^2 (0 = native size; BMRS uses 32)
  c.val_fraction = 0.0       # > 0: validation share of the official training set (BMRS: 0.2)
  c.input_offset = 0.0       # images become (x - input_offset) / input_scale, x in [0, 1]
  c.input_scale = 1.0

  # Model.
  c.architecture = "mlp"
  c.architecture_student = [2, 25, 25, 1]
  c.activation = "tanh"

  # Objective and optimiser. ``method``: none (plain training), rl1, drr,
  # pmmp, layerwise (unregularised training, then the layerwise fit).
  c.method = "none"
  c.alpha = 0.0
  c.rho = 0.0
  c.beta = 10.0              # DRR sharpness (TrainArgs' 0 would disable DRR; the DRR struct's 10)
  c.norm = False             # DRR: normalise the alpha term per layer
  c.layer_norm = True        # DRR NORM: per top-level layer (True) or per parameter block
  c.l1_alpha = 0.0           # PMMP: L1 on theta
  c.initial_p_value = 1.0    # PMMP: initial gamma
  c.initial_u_value = 0.0    # PMMP: initial u
  c.u_value_multiply_factor = 1.0
  c.gauss_loss = False       # teacher-student: Gaussian code length with learnable sigma
  c.layerwise_pruning_alpha = 0.1
  c.layerwise_pruning_lr = 1e-3
  c.layerwise_pruning_mask_start_value = 0.3
  c.layerwise_pruning_max_epochs = 20000  # the reference uses max_epochs (default 20000)
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
  c.shrinking = False            # prune during training once the loss saturates
  c.shrinking_from_deviation_of = 1e-2

  # Pruning after the regularised phase (and when shrinking): random gradient
  # pruning -> criterion -> random gradient pruning (-> neuron deletion).
  c.pruning = ml_collections.ConfigDict()
  c.pruning.criterion = "tamade"
  c.pruning.tolerated_relative_loss_increase = 0.01
  c.pruning.binary_search_resolution = 1e-7
  c.pruning.calibration = "train"  # TAMADE's data: train (the paper) or val (the later code)
  c.pruning.density = 1.0          # global_density
  c.pruning.threshold = 0.0        # global_threshold
  c.pruning.random_gradient_pruning = True
  c.pruning.delete_neurons = False  # MLPs: fold neurons without inputs into the next bias
  c.prunable = "all"

  # BMRS (method "bmrs", Wright et al., 2024): log-uniform unit gates trained
  # for exactly max_epochs epochs with the criterion applied every
  # compress_epochs epochs (0: only at the end), then finetuned for exactly
  # finetuning_max_epochs epochs with frozen masks (the best validation
  # epoch is kept).
  c.bmrs = ml_collections.ConfigDict()
  c.bmrs.criterion = "bmrs_n"      # none, snr, expected_theta, l2, bmrs_n, bmrs_u
  c.bmrs.p1 = 8.0                  # bmrs_u: reduced prior LogU[2^-23, 2^-p1]
  c.bmrs.convention = "paper"      # bmrs_n: keep the 1/2 log 2 pi term (paper) or drop it (code)
  c.bmrs.mu_p = -20.0              # bmrs_n: reduced-prior mean (log space)
  c.bmrs.var_p = 1e-12             # bmrs_n: reduced-prior variance
  c.bmrs.threshold = -1.0          # snr / expected_theta / l2 cut; < 0: the criterion's default
  c.bmrs.match_compression = -1.0  # >= 0: final cut at this percentile of the scores (units %)
  c.bmrs.compress_epochs = 1
  c.bmrs.monotone = True           # a pruned unit stays pruned (False: the upstream behaviour)
  c.bmrs.kl_reduction = "mean"     # mean (BMRS) or sum over units
  c.bmrs.kl_weight = "one"         # one (BMRS) or inverse_n_train (the ELBO per example)
  c.bmrs.noise = "per_element"     # per_element (BMRS) or per_batch (SBP)
  c.bmrs.n_layers = 5              # bmrs_mlp: hidden Linear(h, h) layers after the first
  c.bmrs.hidden_dim = 50           # bmrs_mlp: hidden width
  c.bmrs.posthoc_points = 100      # post-training sweep: percentiles in linspace(0, 100, n)
  c.bmrs.posthoc_finetune_epochs = 1

  # Seed sweeps: seeds > 1 runs seeds seed, seed + 1, ..., seed + seeds - 1 as
  # vmapped programs of chunk_size seeds; a SLURM array task runs its
  # sub_batch (0-based) of num_sub_batches contiguous parts of them.
  c.seeds = 1
  c.sweep = ml_collections.ConfigDict()
  c.sweep.chunk_size = 64
  c.sweep.num_sub_batches = 1
  c.sweep.sub_batch = 0

  # Bookkeeping.
  c.checkpoint_every_epochs = 100
  c.quiet = False
  return c


def _flatten(config, prefix="") -> dict[str, Any]:
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def field_names() -> list[str]:
  """Dotted names of every valid field."""
  return sorted(_flatten(base_config()))


def check_field_name(name: str) -> None:
  """Raises :class:`ConfigError` unless ``name`` is a valid dotted field."""
  if name not in field_names():
    raise ConfigError(f"unknown config field {name!r}; valid fields: {', '.join(field_names())}")


def _choice(config, name: str, accepted) -> None:
  value = _flatten(config)[name]
  if value not in accepted:
    raise ConfigError(f"config field {name!r} is {value!r}; accepted values: {', '.join(accepted)}")


def _require(ok: bool, name: str, value, what: str) -> None:
  if not ok:
    raise ConfigError(f"config field {name!r} is {value!r}; it must be {what}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of ``config`` before any compute."""
  flat = _flatten(config)
  defaults = _flatten(base_config())
  for name in flat:
    check_field_name(name)
  for name, default in defaults.items():
    if name not in flat:
      raise ConfigError(f"config has no field {name!r}; start configs from base_config()")
    value = flat[name]
    if isinstance(default, bool):
      _require(isinstance(value, bool), name, value, "true or false")
    elif isinstance(default, int):
      _require(isinstance(value, int) and not isinstance(value, bool), name, value, "an integer")
    elif isinstance(default, float):
      _require(isinstance(value, (int, float)) and not isinstance(value, bool), name, value, "a number")
  for name, accepted in [("dataset", DATASETS), ("architecture", ARCHITECTURES),
                         ("activation", ACTIVATIONS), ("method", METHODS),
                         ("optimizer", OPTIMIZERS), ("pruning.criterion", PRUNING),
                         ("prunable", PRUNABLE), ("dtype", DTYPES),
                         ("pruning.calibration", CALIBRATION),
                         ("bmrs.criterion", BMRS_CRITERIA), ("bmrs.convention", BMRS_CONVENTIONS),
                         ("bmrs.kl_reduction", KL_REDUCTIONS), ("bmrs.kl_weight", KL_WEIGHTS),
                         ("bmrs.noise", GATE_NOISE)]:
    _choice(config, name, accepted)
  _require(config.lr > 0, "lr", config.lr, "> 0")
  for name in ("alpha", "rho", "noise", "pruning.threshold", "l1_alpha", "initial_u_value",
               "u_value_multiply_factor", "layerwise_pruning_alpha", "shrinking_from_deviation_of",
               "pruning.tolerated_relative_loss_increase"):
    _require(flat[name] >= 0, name, flat[name], ">= 0")
  _require(0 < config.pruning.density <= 1, "pruning.density", config.pruning.density, "in (0, 1]")
  for name in ("beta", "pruning.binary_search_resolution", "layerwise_pruning_lr"):
    _require(flat[name] > 0, name, flat[name], "> 0")
  for name in ("initial_p_value", "layerwise_pruning_mask_start_value"):
    _require(0 <= flat[name] <= 1, name, flat[name], "in [0, 1]")
  for name in ("train_set_size", "val_set_size", "test_set_size", "train_batch_size", "min_epochs",
               "finetuning_min_epochs"):
    _require(flat[name] >= 0, name, flat[name], ">= 0")
  for name in ("eval_batch_size", "prune_window", "checkpoint_every_epochs", "smoothing_window",
               "layerwise_pruning_max_epochs", "seeds", "sweep.chunk_size",
               "sweep.num_sub_batches"):
    _require(flat[name] >= 1, name, flat[name], ">= 1")
  _require(config.max_epochs >= config.min_epochs, "max_epochs", config.max_epochs,
           f">= min_epochs ({config.min_epochs})")
  _require(config.finetuning_max_epochs >= config.finetuning_min_epochs, "finetuning_max_epochs",
           config.finetuning_max_epochs, f">= finetuning_min_epochs ({config.finetuning_min_epochs})")
  if config.architecture == "mlp":
    widths = list(config.architecture_student)
    _require(len(widths) >= 2 and all(isinstance(w, int) and w > 0 for w in widths),
             "architecture_student", widths, "a list of >= 2 positive integers")
  if config.dataset == "teacher_student":
    _require(config.architecture == "mlp", "architecture", config.architecture,
             "'mlp' for the teacher_student data set")
  mlp_only = config.architecture in ("mlp", "lenet_300_100")
  if config.method == "layerwise":
    _require(mlp_only, "architecture", config.architecture,
             "'mlp' or 'lenet_300_100' for method 'layerwise' (Dense layers only)")
  if config.pruning.delete_neurons:
    _require(mlp_only, "pruning.delete_neurons", True,
             "false unless the architecture is 'mlp' or 'lenet_300_100'")
  _require(0 <= config.sweep.sub_batch < config.sweep.num_sub_batches, "sweep.sub_batch",
           config.sweep.sub_batch, f"in [0, sweep.num_sub_batches = {config.sweep.num_sub_batches})")
  if config.seeds > 1:
    _require(not config.shrinking, "shrinking", True, "false in a seed sweep (seeds > 1)")
    _require(config.method != "layerwise", "method", "layerwise",
             "one of none, rl1, drr, pmmp in a seed sweep (seeds > 1)")
  _require(config.image_size >= 0, "image_size", config.image_size, ">= 0 (0 = native size)")
  _require(config.input_scale > 0, "input_scale", config.input_scale, "> 0")
  _require(0 <= config.val_fraction < 1, "val_fraction", config.val_fraction,
           "in [0, 1) (0 = the default 5,000 validation images)")
  _validate_bmrs(config)
  if config.gauss_loss:
    _require(config.dataset == "teacher_student", "gauss_loss", True,
             "false unless the data set is 'teacher_student' (a regression loss)")


#: Architectures built for BMRS's 32x32 (or 224x224) inputs, with gates everywhere.
BMRS_ARCHITECTURES = ("bmrs_mlp", "bmrs_lenet5", "resnet18", "resnet50", "vit_small", "vit_b16")


def _validate_bmrs(config: ml_collections.ConfigDict) -> None:
  b = config.bmrs
  _require(0 < b.p1 < 23, "bmrs.p1", b.p1, "in (0, 23) (the reduced prior's 2^-23 lower end)")
  _require(b.var_p > 0, "bmrs.var_p", b.var_p, "> 0")
  _require(b.threshold == -1 or b.threshold >= 0, "bmrs.threshold", b.threshold,
           ">= 0, or -1 for the criterion's default")
  _require(b.match_compression == -1 or 0 <= b.match_compression <= 100, "bmrs.match_compression",
           b.match_compression, "in [0, 100], or -1 (off)")
  for name in ("compress_epochs", "n_layers"):
    _require(b[name] >= 0, f"bmrs.{name}", b[name], ">= 0")
  for name in ("hidden_dim", "posthoc_points", "posthoc_finetune_epochs"):
    _require(b[name] >= 1, f"bmrs.{name}", b[name], ">= 1")
  if config.method == "bmrs":
    _require(config.dataset != "teacher_student", "dataset", config.dataset,
             "an image data set for method 'bmrs'")
  if config.architecture in BMRS_ARCHITECTURES:
    _require(config.dataset != "teacher_student", "dataset", config.dataset,
             f"an image data set for architecture {config.architecture!r}")
