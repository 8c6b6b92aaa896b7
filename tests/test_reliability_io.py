"""Reliability on the command line: a damaged file gives its one message and nothing else.

Each case runs ``python -m sparsejax.main`` as a user does and checks the exit
status, the one message (a ``warning:`` the run goes on after, or the
``error:`` it stops with) and that stderr holds nothing else: no traceback, no
line logged by orbax, asyncio, TensorFlow or tensorflow-datasets. The
finished and interrupted runs the commands meet are trained in this process
with the command's own config (:func:`cli_config`), so that only the command
under test runs as a subprocess.
"""

import pathlib
import re
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sparsejax import checkpoint as checkpoint_lib
from sparsejax.runner import program as program_lib
from sparsejax.runner import run
from tests.test_cli import run_main
from tests.test_runner import REPO, latest_checkpoint, main_command

#: A short teacher-student run: 100 epochs of training, no finetuning.
SHORT = {"max_epochs": 100, "min_epochs": 0, "finetuning_max_epochs": 0,
         "finetuning_min_epochs": 0}


def cli_config(**overrides):
  """The config that ``main_command(workdir, *as_overrides(overrides))`` runs."""
  sys.path.insert(0, str(REPO))
  from configs import teacher_student
  config = teacher_student.get_config()
  config.experiment_name = "cli"
  config.quiet = True
  config.update_from_flattened_dict(overrides)
  return config


def as_overrides(overrides) -> list[str]:
  return [f"{name}={value}" for name, value in overrides.items()]


def command(workdir, overrides, *more) -> subprocess.CompletedProcess:
  return subprocess.run(main_command(workdir, *as_overrides(overrides), *more), cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def flip_array_bytes(step: pathlib.Path) -> None:
  """Changes 8 bytes of the largest data file of a step's arrays. The file is compressed, so it
  usually still decodes, with other values (the checksum catches them), and sometimes no longer
  decodes (the read fails): :func:`flipped_reason` matches both reasons."""
  path = max((p for p in (step / "state").rglob("d/*") if p.is_file()),
             key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def flipped_reason(step: pathlib.Path) -> str:
  """A pattern of the reason a step damaged by :func:`flip_array_bytes` gives."""
  return (re.escape(f"checkpoint {step}: its arrays do not match the checksum saved with them")
          + "|" + re.escape(f"checkpoint {step} cannot be read: ") + r"[^\n]*")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A workdir with the finished run of ``SHORT`` and its row."""
  workdir = tmp_path_factory.mktemp("finished")
  [row] = run(cli_config(**SHORT), workdir)
  return workdir, row


def copy_of(finished, folder: pathlib.Path):
  """A copy of the finished workdir, its run id and its final state's only step."""
  workdir, row = finished
  shutil.copytree(workdir, folder)
  final = folder / "checkpoints" / row["run_id"]
  [step] = [p for p in final.iterdir() if p.name.isdigit()]
  return folder, row["run_id"], step


# -- 1: a checkpoint fallback prints its warnings only ------------------------------------------


def interrupted_run(workdir, monkeypatch, overrides, saved=lambda content: content):
  """Trains the run of ``overrides`` in ``workdir`` until it is killed after its second
  checkpoint, each checkpoint holding ``saved(content)``; returns its checkpoint folder."""
  save = program_lib.Program.save

  def killed_after_two(self, content):
    save(self, saved(content))
    if self.meta["saves"] == 2:
      raise KeyboardInterrupt("killed after the second save")
  monkeypatch.setattr(program_lib.Program, "save", killed_after_two)
  with pytest.raises(KeyboardInterrupt):
    run(cli_config(**overrides), workdir)
  monkeypatch.undo()
  [folder] = (workdir / "checkpoints").iterdir()
  return folder


@pytest.mark.slow  # the command trains the rest of the run (about 20 s)
def test_a_checkpoint_fallback_prints_only_its_warning(tmp_path, monkeypatch):
  overrides = dict(SHORT, checkpoint_every_epochs=50)
  folder = interrupted_run(tmp_path, monkeypatch, overrides)
  latest = folder / str(latest_checkpoint(tmp_path))
  # A truncated database manifest fails every array's read at once: orbax's
  # concurrent restore used to leave the other reads to print tracebacks.
  manifest = latest / "state" / "manifest.ocdbt"
  manifest.write_bytes(manifest.read_bytes()[:20])
  done = command(tmp_path, overrides, "quiet=False")
  assert done.returncode == 0, done.stderr[-3000:]
  [line] = done.stderr.splitlines()
  assert line.startswith(f"warning: checkpoint {latest} cannot be read: ")
  assert line.endswith("; it is removed and an older checkpoint is tried")
  assert "resuming seeds 42..42 from checkpoint 1" in done.stdout


@pytest.mark.slow  # trains the interrupted run (about 15 s)
def test_a_checkpoint_another_version_wrote_stops_the_run_and_is_kept(tmp_path, monkeypatch):
  # The "other version" saved one more leaf in its state than this code's.
  overrides = dict(SHORT, checkpoint_every_epochs=50)
  folder = interrupted_run(  # it saves inside a phase: a carry
      tmp_path, monkeypatch, overrides,
      lambda carry: carry._replace(last=dict(carry.last, retired=jnp.zeros(1))))
  steps = sorted(p.name for p in folder.iterdir())
  latest = folder / str(latest_checkpoint(tmp_path))
  done = command(tmp_path, overrides)
  assert done.returncode == 2, done.stderr[-3000:]
  assert done.stderr == (
      f"error: checkpoint {latest} is intact but holds a state of another structure than "
      "this code's (not expected: last.retired): another version of sparsejax wrote it. It is "
      f"left as it is: resume the run with the version that wrote it, or move {folder} away "
      "to start the run over\n")
  assert sorted(p.name for p in folder.iterdir()) == steps  # nothing removed


@pytest.mark.parametrize("damage", ["truncated_manifest", "deleted_manifest",
                                    "truncated_data"])
def test_a_damaged_step_is_found_before_orbax_restores_it(tmp_path, monkeypatch, damage):
  # Whether orbax's concurrent restore leaves reads in flight to print tracebacks
  # depends on timing; that it is never reached for a damaged step does not.
  tree = {"w": np.arange(3000.0), "b": jnp.ones(7), "n": None}
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, tree)
  state = tmp_path / "1" / "state"
  if damage == "truncated_manifest":
    (state / "manifest.ocdbt").write_bytes((state / "manifest.ocdbt").read_bytes()[:20])
  elif damage == "deleted_manifest":
    (state / "manifest.ocdbt").unlink()
  else:
    for path in state.rglob("d/*"):
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  restores = []
  monkeypatch.setattr(ocp.CheckpointManager, "restore",
                      lambda *args, **kwargs: restores.append(args))
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint_lib.CheckpointDamaged,
                       match=f"checkpoint {tmp_path / '1'} cannot be read: ValueError: "):
      ckpt.restore(like=tree)
    with pytest.raises(checkpoint_lib.CheckpointDamaged):
      ckpt.check()
  assert not restores


# -- 2: a damaged prepared tensorflow-datasets copy ---------------------------------------------


@pytest.mark.slow  # preparing MNIST takes about 25 s
def test_a_damaged_prepared_copy_gives_the_error_alone(tmp_path, mnist_dir):
  from sparsejax.data import load_image_dataset
  tfds_dir = tmp_path / "tfds"
  load_image_dataset("mnist", manual_dir=mnist_dir, data_dir=tfds_dir)
  [record] = tfds_dir.rglob("mnist-train.tfrecord*")
  data = record.read_bytes()
  record.write_bytes(data[:len(data) // 2])
  # Without the tests' TensorFlow settings: the silencing is sparsejax's own.
  done = run_main("--config=configs/lenet300_mnist.py:none", f"--workdir={tmp_path / 'w'}",
                  f"--config.manual_dir={mnist_dir}", f"--config.data_dir={tfds_dir}",
                  "--config.quiet=True")
  assert done.returncode == 2, done.stderr
  [line] = done.stderr.splitlines()  # TensorFlow's warnings about the read are not shown
  folder = record.parent
  assert line.startswith(f"error: the prepared copy of data set 'mnist' in {folder} cannot "
                         "be read (DataLossError: ")
  assert line.endswith(f"delete the folder {folder} and run again to prepare it anew")


# -- 3: a damaged final state is named by its folder and step -----------------------------------


@pytest.mark.parametrize("damage", [pytest.param("flipped_arrays", marks=pytest.mark.slow),
                                    "deleted_step"])
def test_a_damaged_final_state_to_start_from_names_its_step(tmp_path, finished, damage):
  source, run_id, step = copy_of(finished, tmp_path / "source")
  if damage == "flipped_arrays":
    flip_array_bytes(step)
    what = flipped_reason(step)
  else:
    shutil.rmtree(step)
    what = re.escape(f"no completely written checkpoint step in {step.parent}")
  done = command(tmp_path / "w", SHORT, f"init_from={source}")
  assert done.returncode == 2, done.stderr[-3000:]
  assert re.fullmatch(
      re.escape(f"error: the final state of run {run_id} is damaged or missing (") + f"(?:{what})"
      + re.escape(f"); its row in {source / 'runs.csv'} is intact. To recompute the run, delete "
                  f"its row and {step.parent}, and run its command again\n"), done.stderr)


def test_loading_a_final_state_another_version_wrote_says_so(tmp_path, finished, monkeypatch):
  from sparsejax.runner import errors, reload
  workdir, run_id, step = copy_of(finished, tmp_path / "w")
  template = program_lib.Program.final_template
  monkeypatch.setattr(program_lib.Program, "final_template",
                      lambda self: template(self)._replace(masks={"added": jnp.ones(2)}))
  with pytest.raises(errors.IncompatibleCheckpoint) as raised:
    reload.load_run(workdir, run_id)
  message = str(raised.value)
  assert message.startswith(f"the final state of run {run_id}: checkpoint {step} is intact "
                            "but holds a state of another structure than this code's (")
  assert "missing from it: state.masks.added" in message
  assert message.endswith("and run its command again to recompute it")
  assert step.exists()


# -- 4: rerunning a finished run whose final state is damaged -----------------------------------


@pytest.mark.parametrize("damage", ["intact", "flipped_arrays", "deleted_folder"])
def test_rerunning_a_finished_run_warns_of_its_damaged_final_state(tmp_path, finished, damage):
  workdir, run_id, step = copy_of(finished, tmp_path / "w")
  if damage == "flipped_arrays":
    flip_array_bytes(step)
    what = flipped_reason(step)
  elif damage == "deleted_folder":
    shutil.rmtree(step.parent)
    what = re.escape(f"no completely written checkpoint step in {step.parent}")
  done = command(workdir, SHORT)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith(f"{run_id}: kept ")  # the row, reported again
  if damage == "intact":
    assert done.stderr == ""
    return
  assert re.fullmatch(
      re.escape(f"warning: the final state of run {run_id} is damaged or missing (") + f"(?:{what})"
      + re.escape(f"); its row in {workdir / 'runs.csv'} is intact. To recompute the run, delete "
                  f"its row and {step.parent}, and run its command again\n"), done.stderr)
  assert step.parent.exists() == (damage != "deleted_folder")  # not made by the check
