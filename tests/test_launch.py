"""Launch scripts run the Python of the active environment, or the one PYTHON names."""

import os
import pathlib
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = {
    "sweep_array.slurm": ["configs/teacher_student.py", "4", "OUT"],
    "merge.slurm": ["OUT"],
    "bmrs_table1.sh": ["bmrs_mlp_mnist", "3", "OUT"],
    "multinode.slurm": ["configs/vgg_cifar.py", "OUT"],
}


def fake_python(folder: pathlib.Path, name: str, log: pathlib.Path) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  fake = folder / name
  fake.write_text(f'#!/bin/sh\necho "{name} $@" >> {log}\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  return fake


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_launch_scripts_use_the_active_environment_or_PYTHON(script, tmp_path):
  log = tmp_path / "calls.txt"
  fake_python(tmp_path / "env" / "bin", "python", log)
  named = fake_python(tmp_path / "named", "chosen", log)
  srun = tmp_path / "env" / "bin" / "srun"  # runs the command once, here, without its options
  srun.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
  srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
  env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
  env.update(PATH=f"{tmp_path / 'env' / 'bin'}:{env['PATH']}", SLURM_ARRAY_TASK_COUNT="2",
             SLURM_ARRAY_TASK_ID="0", SLURM_SUBMIT_DIR=str(REPO))
  args = ["bash", f"launch/{script}", *[str(tmp_path / a) if a == "OUT" else a
                                        for a in SCRIPTS[script]]]
  subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
  calls = log.read_text().splitlines()
  assert calls and all(c.startswith("python -m sparsejax.") for c in calls), calls
  log.unlink()
  subprocess.run(args, cwd=REPO, env=dict(env, PYTHON=str(named)), check=True,
                 capture_output=True)
  assert all(c.startswith("chosen -m sparsejax.") for c in log.read_text().splitlines())
  assert ".venv" not in (REPO / "launch" / script).read_text()
