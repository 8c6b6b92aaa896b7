"""Orbax checkpoints: exact round trips, retention, and a save killed with SIGKILL."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from sparsejax import objectives
from sparsejax.checkpoint import Checkpointer, CheckpointIncompatible

REPO = pathlib.Path(__file__).resolve().parents[1]


class State(NamedTuple):
  step: jax.Array
  params: Any
  masks: Any
  opt_state: Any
  objective_state: Any
  model_state: Any
  key: jax.Array


def make_state(seed: int = 0) -> State:
  k = jax.random.key(seed)
  params = {
      "Dense_0": {"kernel": jax.random.normal(k, (3, 4)), "bias": jnp.arange(4.0)},
      "Dense_1": {"kernel": jax.random.normal(jax.random.fold_in(k, 1), (4, 1), jnp.bfloat16)},
  }
  masks = {
      "Dense_0": {"kernel": jnp.array([[True, False, True, True]] * 3), "bias": None},
      "Dense_1": {"kernel": jnp.array([[True], [False], [False], [True]])},
  }
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  opt_state = opt.init(params)
  _, opt_state = opt.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
  return State(
      step=jnp.int32(7 + seed),
      params=params,
      masks=masks,
      opt_state=opt_state,
      objective_state={"log_sigma": jnp.float32(-2.3), "u": jnp.full((3,), seed, jnp.int8)},
      model_state={},
      key=jax.random.split(jax.random.key(42 + seed))[1],
  )


def assert_same(a: State, b: State) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  a, b = a._replace(key=jax.random.key_data(a.key)), b._replace(key=jax.random.key_data(b.key))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_exact(tmp_path):
  state = make_state()
  meta = {"epoch": 12, "phase": "finetune", "curves": {"val_loss": [0.5, np.float32(0.25)]},
          "best": jnp.float32(0.125), "worst": float("inf")}
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(12, state, meta)
    restored, restored_meta = ckpt.restore(like=make_state(seed=1))
  assert_same(restored, state)
  assert restored.masks["Dense_0"]["bias"] is None
  assert restored.model_state == {}
  assert isinstance(restored.opt_state[0], optax.EmptyState)
  assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
  assert jax.random.key_impl(restored.key) == jax.random.key_impl(state.key)
  assert restored_meta == {"epoch": 12, "phase": "finetune",
                           "curves": {"val_loss": [0.5, 0.25]}, "best": 0.125,
                           "worst": float("inf")}


@pytest.mark.parametrize("gauss", [False, True])
def test_named_tuple_objective_states_round_trip(tmp_path, gauss):
  def state(seed):
    base = make_state(seed)
    obj = objectives.pmmp(0.1, initial_p_value=0.5 + 0.1 * seed, initial_u_value=seed)
    if gauss:
      obj = objectives.with_gauss_loss(obj, initial_sigma=0.1 + seed)
    return base._replace(objective_state=obj.init(jax.random.key(seed), base.params))

  saved = state(0)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(0, saved)
    restored, _ = ckpt.restore(like=jax.eval_shape(lambda: state(1)))
  assert_same(restored, saved)
  pmmp_state = restored.objective_state
  if gauss:
    assert type(pmmp_state) is objectives.GaussState
    assert float(pmmp_state.sigma) == pytest.approx(0.1)
    pmmp_state = pmmp_state.inner
  assert type(pmmp_state) is objectives.PMMPState
  np.testing.assert_allclose(pmmp_state.gamma["Dense_0"]["kernel"], 0.5)
  jax.tree.map(np.testing.assert_array_equal, pmmp_state.w, saved.params)


def test_restore_into_abstract_template_and_other_key_impl(tmp_path):
  state = {"key": jax.random.key(3, impl="rbg"), "w": jnp.arange(6.0).reshape(2, 3),
           "n": np.arange(3, dtype=np.int16)}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(0, state)
    restored, meta = ckpt.restore(like=jax.eval_shape(lambda: state))
  assert meta == {}
  assert jax.random.key_impl(restored["key"]) == jax.random.key_impl(state["key"])
  np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                jax.random.key_data(state["key"]))
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert restored["n"].dtype == np.int16


def test_restore_keeps_template_sharding(tmp_path):
  mesh = jax.make_mesh((len(jax.devices()),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = {"x": jax.device_put(jnp.arange(8.0), sharding),
           "w": jax.device_put(jnp.ones((2, 2)), replicated)}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state)
    restored, _ = ckpt.restore(like=state)
  assert restored["x"].sharding == sharding and restored["w"].sharding == replicated
  np.testing.assert_array_equal(restored["x"], np.arange(8.0))


def test_retention_interval_and_specific_step(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as ckpt:
    written = [s for s in range(1, 8) if ckpt.save(s, make_state(s), {"epoch": s})]
    assert written == [1, 2, 4, 6]  # the first save, then every second step
    assert ckpt.save(7, make_state(7), {"epoch": 7}, force=True)
    assert ckpt.latest_step() == 7 and ckpt.all_steps() == [6, 7]
    state, meta = ckpt.restore(6, like=make_state())
    assert meta == {"epoch": 6}
    assert_same(state, make_state(6))
    with pytest.raises(FileNotFoundError):
      ckpt.restore(4, like=make_state())
  with Checkpointer(tmp_path, max_to_keep=2) as reopened:
    assert reopened.latest_step() == 7
    assert_same(reopened.restore(like=make_state())[0], make_state(7))


def test_async_save_then_wait(tmp_path):
  ckpt = Checkpointer(tmp_path, async_save=True)
  ckpt.save(3, make_state(3), {"epoch": 3})
  ckpt.wait()
  assert ckpt.latest_step() == 3
  assert_same(ckpt.restore(like=make_state())[0], make_state(3))
  ckpt.close()


def test_restore_without_checkpoint_raises(tmp_path):
  with Checkpointer(tmp_path) as ckpt, pytest.raises(FileNotFoundError):
    ckpt.restore(like=make_state())


def test_a_step_of_another_structure_is_incompatible_and_kept(tmp_path, monkeypatch):
  saved = {"chains": {"mask": jnp.ones(5), "old": jnp.zeros(2)}, "key": jax.random.key(1),
           "n": None}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, saved, {"epoch": 1})
  newer = {"chains": {"mask": jnp.ones(5), "cache": jnp.zeros(3), "h2": jnp.zeros(1)},
           "key": jax.random.key(1), "n": None}
  restores = []
  with Checkpointer(tmp_path) as ckpt:
    monkeypatch.setattr(ocp.CheckpointManager, "restore",
                        lambda *args, **kwargs: restores.append(args))
    with pytest.raises(CheckpointIncompatible) as raised:
      ckpt.restore(like=newer)
    monkeypatch.undo()
    assert str(raised.value) == (
        f"checkpoint {tmp_path / '1'} is intact but holds a state of another structure than "
        "this code's (missing from it: chains.cache, chains.h2; not expected: chains.old): "
        "another version of sparsejax wrote it")
    assert not restores  # found before orbax restores anything
    assert ckpt.all_steps() == [1]
    restored, meta = ckpt.restore(like=saved)  # the version that wrote it still can
  assert meta["epoch"] == 1
  np.testing.assert_array_equal(restored["chains"]["mask"], np.ones(5))


# The child saves steps 1 and 2, then starts step 3 and stalls inside orbax's
# commit of it (every file written, the folder not yet renamed into place),
# where the parent kills it with SIGKILL.
CHILD = textwrap.dedent("""
    import asyncio, pathlib, sys, time
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from sparsejax.checkpoint import Checkpointer

    directory, marker = sys.argv[1], pathlib.Path(sys.argv[2])
    tmp_path = ocp.path.atomicity.AtomicRenameTemporaryPath
    finalize = tmp_path.finalize

    async def stalled_finalize(self):
      if self.get_final().name == "3":
        marker.touch()
        await asyncio.sleep(600)
      await finalize(self)

    tmp_path.finalize = stalled_finalize
    ckpt = Checkpointer(directory)
    for step in (1, 2, 3):
      ckpt.save(step, {"w": jnp.full((256, 256), float(step)), "mask": None},
                {"epoch": step})
""")


def test_killed_save_leaves_latest_complete_step(tmp_path):
  directory, marker = tmp_path / "ckpt", tmp_path / "stalled"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(marker)],
                           env=env, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 60
  while not marker.exists():
    assert child.poll() is None, child.stderr.read().decode()
    assert time.monotonic() < deadline, "child never reached step 3"
    time.sleep(0.01)
  child.send_signal(signal.SIGKILL)
  child.wait()
  child.stderr.close()
  assert child.returncode == -signal.SIGKILL
  leftovers = [p.name for p in directory.iterdir() if p.name.startswith("3.")]
  assert leftovers and all("tmp" in name for name in leftovers)

  like = {"w": jnp.zeros((256, 256)), "mask": None}
  with Checkpointer(directory) as ckpt:
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [1, 2]
    state, meta = ckpt.restore(like=like)
    assert meta == {"epoch": 2} and state["mask"] is None
    np.testing.assert_array_equal(state["w"], np.full((256, 256), 2.0))
    assert ckpt.save(3, state, {"epoch": 3})  # the resumed run saves step 3 again
    assert ckpt.latest_step() == 3
  assert sorted(p.name for p in directory.iterdir()) == ["1", "2", "3"]  # tmp cleaned up


# Unpatched orbax: the child saves step after step (pruning old ones) until
# the parent kills it at an arbitrary moment of writing, committing or deleting.
LOOPING_CHILD = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from sparsejax.checkpoint import Checkpointer

    ckpt = Checkpointer(sys.argv[1], max_to_keep=2)
    for step in range(1, 10_000):
      ckpt.save(step, {"w": jnp.full((512, 512), float(step))}, {"epoch": step})
""")


@pytest.mark.parametrize("delay", [0.0, 0.07])
def test_killed_at_any_moment_latest_step_restores(tmp_path, delay):
  directory = tmp_path / "ckpt"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", LOOPING_CHILD, str(directory)],
                           env=env, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 60
  while not (directory / "3").exists():
    assert child.poll() is None, child.stderr.read().decode()
    assert time.monotonic() < deadline, "child never reached step 3"
    time.sleep(0.005)
  time.sleep(delay)
  child.send_signal(signal.SIGKILL)
  child.wait()
  child.stderr.close()

  with Checkpointer(directory, max_to_keep=2) as ckpt:
    step = ckpt.latest_step()
    assert step >= 3
    state, meta = ckpt.restore(like={"w": jnp.zeros((512, 512))})
  assert meta == {"epoch": step}
  np.testing.assert_array_equal(state["w"], np.full((512, 512), float(step)))
