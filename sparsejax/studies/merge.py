"""Joins the workdirs of several tasks (SLURM sub-batches) into one.

``python -m sparsejax.studies.merge --workdir=DEST SRC [SRC ...]`` upserts the
rows of each ``SRC/runs.csv`` into ``DEST/runs.csv`` by ``run_id``
(:func:`sparsejax.results.merge_runs`: under the file lock, atomically, so
several merges may run at once), and copies each run's artifacts folder.
Merging a task again (after re-running it) replaces its rows and artifacts;
nothing is duplicated. Checkpoints stay in the task workdirs.
"""

from __future__ import annotations

import pathlib
import shutil

from absl import app, flags

from sparsejax import results

def merge(dest: str | pathlib.Path, sources: list[str | pathlib.Path]) -> None:
  """Merges the runs tables and artifacts of ``sources`` into ``dest``."""
  dest = pathlib.Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  results.merge_runs(dest, sources)
  for source in map(pathlib.Path, sources):
    for run_dir in sorted((source / "artifacts").glob("*")):
      shutil.copytree(run_dir, dest / "artifacts" / run_dir.name, dirs_exist_ok=True)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give the task workdirs to merge after the flags")
  merge(flags.FLAGS.workdir, argv[1:])


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "The workdir that receives the rows.", required=True)
  app.run(main)
