"""The README's two commands: CI runs the test command verbatim; the main command names a config."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
  text = (REPO / "README.md").read_text()
  section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.+?)\n```", section)


def test_ci_runs_the_readme_test_command_verbatim():
  main, tests = readme_commands()
  assert tests.endswith(".venv/bin/pytest")
  assert tests in (REPO / ".ci" / "run").read_text().splitlines()


def test_the_readme_main_command_runs_a_shipped_config():
  main, _ = readme_commands()
  config = re.search(r"--config=(\S+)", main).group(1).split(":")[0]
  assert (REPO / config).is_file()
  assert main.startswith("python3 -m venv .venv && .venv/bin/pip install")
