"""The hard-concrete L0 recipe on a small slice of real MNIST: constraints, penalties, purging."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common, l0_lenet5_mnist, l0_mlp_mnist
from sparsejax.fields import ConfigError
from sparsejax.objectives import hard_concrete as hc
from sparsejax.objectives.constrained_l0 import L0State
from sparsejax.recipes import l0
from sparsejax.runner import load_run, run
from sparsejax.runner.build import build_data, build_model
from sparsejax.runner.config import validate
from sparsejax.train.state import TrainState
from tests.conftest import data_path


def small(module=l0_mlp_mnist, formulation="constrained", **fields):
  config = module.get_config(formulation)
  config.manual_dir = str(data_path("mnist"))
  config.train_set_size, config.val_set_size, config.test_set_size = 2000, 500, 500
  config.max_epochs = config.min_epochs = 4
  config.prune_window = 2
  config.quiet = True
  common.set_fields(config, fields)
  return config


@pytest.mark.slow
def test_a_constrained_run_reaches_its_target_and_reports_the_purged_network(tmp_path):
  # Fast duals and gates, so that 6 epochs of 16 steps reach the target (and
  # overshoot it: the restarts zero the multiplier, Adam's momentum goes on).
  # [0, 1] pixels: the blank border pixels are then exact zeros whose gates
  # the loss does not hold, so few steps suffice.
  config = small(**{"l0.target_density": (0.3,), "l0.gates_lr": 0.1, "l0.dual_lr": 1.0,
                    "seeds": 2, "max_epochs": 6, "min_epochs": 6,
                    "input_offset": 0.0, "input_scale": 1.0})
  rows = run(config, tmp_path)
  for row in rows:
    assert row["status"] == "finished" and row["train_epochs"] == 6
    assert 0.15 <= row["l0_density"] <= 0.3
    assert row["l0_multiplier_0"] >= 0
    assert {"l0_density_Dense_0", "l0_density_Dense_1", "l0_density_Dense_2"} <= set(row)
    assert 0 < row["purged_params"] < 266_610
    assert row["purged_params_pct"] == pytest.approx(100 * row["purged_params"] / 266_610)
    assert row["kept_params"] < 266_610          # the dead gates' weights are masked
    assert row["final_test_accuracy"] > 0.6
  state = load_run(tmp_path, rows[0]["run_id"]).state
  layers = hc.gated_layers(state.params)
  alive = hc.test_gates(state.objective_state.log_alpha["Dense_0"], "median") > 0
  kernel_mask = np.asarray(state.masks["Dense_0"]["kernel"])
  np.testing.assert_array_equal(kernel_mask.all(axis=1), np.asarray(alive))
  assert rows[0]["l0_density"] == pytest.approx(
      float(hc.model_density(layers, state.objective_state.log_alpha)), rel=1e-5)
  # With the dead groups folded to zero (as finetuning starts), the dense network's
  # size is still the whole model's.
  folded, _ = hc.fold_test_gates(layers, state.params, state.objective_state.log_alpha,
                                 config.l0.test_gate)
  loaded = load_run(tmp_path, rows[0]["run_id"])
  fields = l0.purged_size(config, loaded.parts.model, layers,
                          state._replace(params=folded))
  assert fields["purged_params"] == rows[0]["purged_params"]
  assert fields["purged_params_pct"] == pytest.approx(100 * fields["purged_params"] / 266_610)


@pytest.mark.slow
def test_finetuning_starts_from_the_folded_network_and_keeps_the_gates(tmp_path):
  fields = {"l0.target_density": (0.3,), "l0.gates_lr": 0.1, "l0.dual_lr": 1.0,
            "input_offset": 0.0, "input_scale": 1.0}
  plain = run(small(**fields), tmp_path / "plain")[0]
  row = run(small(**fields, **{"l0.finetune_epochs": 2}), tmp_path / "finetuned")[0]
  assert row["train_epochs"] == 4 and row["finetune_epochs"] == 2
  # The training phase is the same run: the stage records the reference's figure.
  assert row["gated_test_accuracy"] == pytest.approx(plain["final_test_accuracy"], abs=1e-6)
  assert row["gated_val_accuracy"] == pytest.approx(plain["final_val_accuracy"], abs=1e-6)
  # Finetuning trains the weights alone: gates, multipliers and purged size unchanged.
  for field in ("l0_density", "l0_density_Dense_0", "l0_multiplier_0", "purged_params"):
    assert row[field] == pytest.approx(plain[field], rel=1e-6), field
  assert row["kept_params"] == plain["kept_params"] < 266_610
  assert row["final_test_accuracy"] != plain["final_test_accuracy"]   # the weights moved
  state = load_run(tmp_path / "finetuned", row["run_id"]).state
  alive = np.asarray(hc.test_gates(state.objective_state.log_alpha["Dense_0"], "median") > 0)
  kernel = np.asarray(state.params["Dense_0"]["kernel"])
  assert not alive.all() and np.all(kernel[~alive] == 0)   # the dead inputs stayed dead


@pytest.mark.slow
def test_annealed_targets_count_every_update_and_survive_the_finetuning(tmp_path):
  fields = {"l0.target_density": (0.3,), "l0.gates_lr": 0.1, "l0.dual_lr": 1.0,
            "input_offset": 0.0, "input_scale": 1.0, "l0.target_anneal_epochs": 3,
            "l0.finetune_epochs": 1}
  row = run(small(**fields), tmp_path)[0]
  assert row["status"] == "finished" and row["train_epochs"] == 4
  assert row["l0_density"] <= 0.35
  state = load_run(tmp_path, row["run_id"]).state
  # 2,000 images in batches of 128: 15 updates an epoch; the finetuning leaves the count.
  assert float(state.objective_state.step) == 4 * 15


def test_annealed_targets_are_refused_for_the_penalized_formulation():
  config = small(formulation="penalized", **{"l0.target_anneal_epochs": 2})
  with pytest.raises(ConfigError, match=r"l0\.target_anneal_epochs") as error:
    validate(config)
  assert "penalized" in str(error.value)


def test_finetuning_is_refused_for_batchnorm_models():
  config = small(**{"l0.finetune_epochs": 2, "l0.droprate_init": (0.5,)})
  config.architecture, config.dataset = "vgg16_bn", "cifar10"
  with pytest.raises(ConfigError, match="l0.finetune_epochs") as error:
    validate(config)
  assert "BatchNorm" in str(error.value)


@pytest.mark.slow
def test_penalized_runs_keep_their_penalty_weights(tmp_path):
  config = small(formulation="penalized", **{"l0.penalty": (0.5,), "max_epochs": 2,
                                             "min_epochs": 2})
  row = run(config, tmp_path)[0]
  assert row["l0_multiplier_0"] == pytest.approx(0.5)
  assert row["l0_density"] < 0.95  # the penalty closed gates (0.93 at initialisation)


def test_each_group_trains_with_config_optimizer_and_the_duals_with_sgd():
  # optimizer="adadelta" trains weights and gates with Adadelta (the recipe
  # once fell back to SGD for every optimiser but Adam), each at its own rate.
  config = l0_mlp_mnist.get_config("constrained")
  common.set_fields(config, {"optimizer": "adadelta", "lr": 0.5, "l0.gates_lr": 0.2,
                             "l0.dual_lr": 0.3, "l0.finetune_lr": 0.7})
  train_vars = {"params": {"Dense_0": {"kernel": jnp.ones((2, 3))}},
                "objective": L0State({"Dense_0": jnp.zeros(2)}, jnp.zeros(1))}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), train_vars)

  def update(optimizer, grad, params):
    return optimizer.update(grad, optimizer.init(params), params)[0]

  def adadelta(lr):
    return optax.adadelta(lr, rho=0.9, eps=1e-6)
  kernel, log_alpha = train_vars["params"]["Dense_0"]["kernel"], train_vars["objective"].log_alpha
  got = update(l0.optimizer(config), grads, train_vars)
  np.testing.assert_array_equal(got["params"]["Dense_0"]["kernel"],
                                update(adadelta(0.5), grads["params"]["Dense_0"]["kernel"], kernel))
  np.testing.assert_array_equal(got["objective"].log_alpha["Dense_0"],
                                update(adadelta(0.2), grads["objective"].log_alpha["Dense_0"],
                                       log_alpha["Dense_0"]))
  np.testing.assert_allclose(got["objective"].multipliers, [-0.3 * 0.5])
  sgd_kernel = update(optax.sgd(0.5), grads["params"]["Dense_0"]["kernel"], kernel)
  assert not np.allclose(got["params"]["Dense_0"]["kernel"], sgd_kernel)
  # Finetuning: the weights at l0.finetune_lr, the gates and multipliers frozen.
  got = update(l0.finetune_optimizer(config), grads, train_vars)
  np.testing.assert_array_equal(got["params"]["Dense_0"]["kernel"],
                                update(adadelta(0.7), grads["params"]["Dense_0"]["kernel"], kernel))
  assert not np.any(got["objective"].log_alpha["Dense_0"]) and not np.any(
      got["objective"].multipliers)


def parts_of(config):
  """What the plan reads of the run's parts without data: the model."""
  return types.SimpleNamespace(model=build_model(config))


def _prepared(config, seed=42):
  """``(initial params, prepared params)`` of the config's model."""
  params = build_model(config).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))[0]
  state = TrainState(0, params, (), {}, (), None)
  return params, l0.plan(config, parts_of(config)).prepare(state, seed).params


def test_initial_kernels_are_divided_by_one_minus_the_droprate():
  config = small(**{"l0.weight_init": "flax"})
  params, scaled = _prepared(config)
  layers = l0.layers_of(config, build_model(config))
  assert [l.name for l in layers] == ["Dense_0", "Dense_1", "Dense_2"]
  for name, d in [("Dense_0", 0.2), ("Dense_1", 0.5), ("Dense_2", 0.5)]:
    np.testing.assert_allclose(scaled[name]["kernel"], params[name]["kernel"] / (1 - d), rtol=1e-6)
    np.testing.assert_array_equal(scaled[name]["bias"], params[name]["bias"])
  unscaled = small(**{"l0.rescale_init": False, "l0.weight_init": "flax"})
  assert l0.plan(unscaled, parts_of(unscaled)).prepare is None


@pytest.mark.parametrize("module, expected", [
    # (layer, droprate, He-normal fan): a Dense kernel's output width, a conv's kh kw c_in.
    (l0_mlp_mnist, [("Dense_0", 0.2, 300), ("Dense_1", 0.5, 100), ("Dense_2", 0.5, 10)]),
    pytest.param(l0_lenet5_mnist, [("Conv_0", 0.5, 25), ("Conv_1", 0.5, 500),
                                   ("Dense_0", 0.5, 500), ("Dense_1", 0.5, 10)],
                 marks=pytest.mark.slow),
])
def test_kaiming_init_draws_the_reference_codes_he_normal_weights(module, expected):
  config = small(module, **{"l0.weight_init": "kaiming"})
  _, prepared = _prepared(config)
  for name, d, fan in expected:
    kernel, bias = np.asarray(prepared[name]["kernel"]), np.asarray(prepared[name]["bias"])
    assert abs(kernel.mean()) < 0.1 * kernel.std()
    # The sample std of n >= 5,000 normals is within 3 % of sigma.
    assert kernel.std() == pytest.approx(np.sqrt(2 / fan) / (1 - d), rel=0.03), name
    bias_std = hc.KAIMING_BIAS_STD / (1 - d) if kernel.ndim == 4 else hc.KAIMING_BIAS_STD
    assert bias.std() == pytest.approx(bias_std, rel=0.5), name   # 10 to 500 entries
    assert np.all(bias != 0)
  again, other = _prepared(config)[1], _prepared(config, seed=43)[1]
  np.testing.assert_array_equal(again[name]["kernel"], prepared[name]["kernel"])
  assert not np.allclose(other[name]["kernel"], prepared[name]["kernel"])


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_mnist_configs_standardise_the_inputs_as_the_reference():
  config = small()
  splits, _, _ = build_data(config, [42])
  x = np.asarray(splits.train.x)
  # torchvision's MNIST statistics, (x - 0.1307) / 0.3081, on 2,000 training images.
  assert abs(x.mean()) < 0.03 and x.std() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("field, value, message", [
    ("l0.target_density", (0.3, 0.3), "one value or one per gated layer (3: Dense_0, Dense_1"),
    ("l0.target_density", (1.5,), "kept densities in (0, 1]"),
    ("l0.droprate_init", (1.0,), "in (0, 1)"),
    ("l0.formulation", "cooper", "accepted values: lagrangian"),
    ("l0.dual_lr", 0.0, "> 0"),
    ("l0.weight_init", "torch", "accepted values: flax, kaiming"),
    ("l0.finetune_epochs", -1, ">= 0"),
    ("l0.finetune_lr", 0.0, "> 0"),
    ("l0.target_anneal_epochs", 5, "in [0, max_epochs = 4]"),
    ("l0.target_anneal_epochs", -1, "in [0, max_epochs = 4]"),
])
def test_bad_l0_fields_are_named(field, value, message):
  config = small()
  common.set_fields(config, {field: value})
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as error:
    validate(config)
  assert message in str(error.value)


def test_lenet5_config_is_layerwise_with_four_targets():
  config = small(l0_lenet5_mnist, **{"l0.target_density": (0.5, 0.3, 0.7, 0.1)})
  validate(config)
  assert [l.name for l in l0.layers_of(config, build_model(config))] == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
  objective = l0.objective(config, l0.layers_of(config, build_model(config)))
  params = build_model(config).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))[0]
  assert objective.init(jax.random.key(0), params).multipliers.shape == (4,)


@pytest.mark.slow
def test_a_penalty_sweep_gives_each_seed_its_own_weight(tmp_path):
  grid = (0.0, 0.3, 3.0)
  config = small(formulation="penalized", **{"l0.penalty": grid, "l0.penalty_sweep": True,
                                             "seeds": 3, "max_epochs": 2, "min_epochs": 2})
  validate(config)
  rows = sorted(run(config, tmp_path), key=lambda row: row["seed"])
  assert [row["l0_multiplier_0"] for row in rows] == pytest.approx(grid)
  densities = [row["l0_density"] for row in rows]
  assert densities[0] > densities[1] > densities[2]   # a larger weight closes more gates
  for bad, message in [({"l0.formulation": "lagrangian"}, "l0.penalty_sweep"),
                       ({"seeds": 2}, "one value per seed")]:
    wrong = config.copy_and_resolve_references()
    common.set_fields(wrong, bad)
    with pytest.raises(ConfigError, match=message):
      validate(wrong)


def test_per_example_sampling_needs_structured_gates_on_a_chain():
  config = small(**{"l0.sampling": "per_example"})
  validate(config)
  common.set_fields(config, {"l0.structure": "unstructured"})
  with pytest.raises(ConfigError, match="l0.sampling"):
    validate(config)


def test_the_bisection_brackets_the_target_in_the_grid_and_halves_it(monkeypatch, tmp_path):
  from sparsejax.studies import l0_bisection
  density = lambda penalty: 1 / (1 + 10 * penalty)  # noqa: E731  (falls with lambda)
  calls = []

  def fake_run(config, workdir):
    penalties = config.l0.penalty if config.l0.penalty_sweep else config.l0.penalty[:1]
    calls.append(len(penalties))
    return [{"l0_multiplier_0": p, "l0_density": density(p), "final_test_accuracy": 0.9,
             "wall_time_s": 1.0} for p in penalties]
  monkeypatch.setattr(l0_bisection, "run", fake_run)
  config = l0_mlp_mnist.get_config("penalty_grid")
  frame = l0_bisection.search(config, tmp_path, 0.5, 0.005, 8)
  grid = frame[frame["source"] == "grid"]
  assert len(grid) == 7 and calls[0] == 7           # one program for the whole grid
  # density 0.5 at lambda = 0.1, a grid point: no bisection needed.
  assert len(frame) == 7
  frame = l0_bisection.search(config, tmp_path, 0.3, 0.005, 8)
  bisections = frame[frame["source"] == "bisection"]
  assert 1 <= len(bisections) <= 8 and all(c == 1 for c in calls[2:])
  assert abs(bisections["expected density"].iloc[-1] - 0.3) <= 0.005
  # Every midpoint stays inside the bracket log10 lambda in [-1, -0.5].
  assert bisections["log10 lambda"].between(-1, -0.5).all()
  with pytest.raises(ValueError, match="straddle"):
    l0_bisection.bracket(grid, 0.999)
  with pytest.raises(ConfigError, match="penalty sweep"):
    l0_bisection.grid(l0_mlp_mnist.get_config("penalized"), tmp_path)
