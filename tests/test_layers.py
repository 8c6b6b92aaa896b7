"""The layers of DESIGN.md: the library and the recipes import nothing of the runner."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_library_and_the_recipes_do_not_import_the_runner():
  # A fresh interpreter: the test session has imported the runner already.
  code = ("import sys\n"
          "import sparsejax.compaction, sparsejax.fields, sparsejax.keys, sparsejax.recipes\n"
          "import sparsejax.train\n"
          "print(sorted(m for m in sys.modules if m.startswith('sparsejax.runner')))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "[]"
