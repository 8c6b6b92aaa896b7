"""The public API is flat and complete: what README.md names resolves from ``import sparsejax``.

Each check runs in a fresh interpreter, so that no earlier import by module path
(which sets a package's attribute as a side effect) hides a missing export.
"""

import pathlib
import re
import subprocess
import sys

from tests.conftest import REPO

#: The library's modules, attributes of the package after ``import sparsejax``.
LIBRARY = ("masks", "objectives", "pruning", "sparsity", "models", "train", "checkpoint",
           "xla_flags")


def resolve_in_fresh_python(names: list[str]) -> None:
  """Resolves every dotted name: library ones by attribute access from ``import sparsejax``
  alone, the others (runner, studies, data, main) by importing their module."""
  code = f"""
import importlib
import sparsejax
missing = []
for name in {names!r}:
  parts = name.split(".")
  if parts[1] in {LIBRARY!r}:
    obj = sparsejax
    for part in parts[1:]:
      obj = getattr(obj, part, None)
  else:
    for end in range(len(parts), 0, -1):
      try:
        obj = importlib.import_module(".".join(parts[:end]))
        break
      except ImportError:
        continue
    for part in parts[end:]:
      obj = getattr(obj, part, None)
  if obj is None:
    missing.append(name)
print(missing)
"""
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == "[]", f"unresolved: {done.stdout.strip()}"


def readme_names() -> list[str]:
  """``sparsejax.*`` names anywhere in README.md and the library section's short forms."""
  text = pathlib.Path(REPO / "README.md").read_text()
  names = set(re.findall(r"\bsparsejax(?:\.[A-Za-z_]\w*)+", text))
  library = text.split("## The library", 1)[1].split("\n## ", 1)[0]
  short = re.findall(rf"(?<![\w.])(?:{'|'.join(LIBRARY)})(?:\.[A-Za-z_]\w*)+", library)
  names |= {f"sparsejax.{name}" for name in short}
  return sorted(names)


def test_every_family_is_exported_from_its_package():
  resolve_in_fresh_python([
      "sparsejax.objectives.hoyer.hoyer_square", "sparsejax.objectives.deephoyer",
      "sparsejax.objectives.hard_concrete.gated_layers", "sparsejax.objectives.hard_concrete_l0",
      "sparsejax.objectives.constrained_l0.L0State", "sparsejax.objectives.log_uniform.snr",
      "sparsejax.pruning.magnitude.gradual_density", "sparsejax.pruning.magnitude_masks",
      "sparsejax.pruning.purge.purge", "sparsejax.compaction.compact",
      "sparsejax.compaction.cost.macs", "sparsejax.runner.load_compacted",
      "sparsejax.pruning.saliency.snip_scores", "sparsejax.pruning.deconst_scores",
      "sparsejax.pruning.annealing.anneal", "sparsejax.pruning.filters.delete_filters",
      "sparsejax.pruning.bmr.scores", "sparsejax.masks.prunable_paths",
      "sparsejax.sparsity.rigl", "sparsejax.sparsity.evolutionary", "sparsejax.sparsity.static",
      "sparsejax.sparsity.sr_ste", "sparsejax.sparsity.NByM", "sparsejax.sparsity.compress_nm",
      "sparsejax.sparsity.distributions.leaf_densities", "sparsejax.sparsity.polynomial",
      "sparsejax.xla_flags.apply"])


def test_every_name_the_readme_gives_resolves():
  names = readme_names()
  assert "sparsejax.pruning.purge" in names and "sparsejax.masks.global_magnitude_density" in names
  resolve_in_fresh_python(names)


def test_every_package_all_resolves():
  from sparsejax import objectives, pruning, train
  resolve_in_fresh_python([f"sparsejax.{package.__name__.split('.')[-1]}.{name}"
                           for package in (objectives, pruning, train)
                           for name in package.__all__])
