"""The results pages: links resolve, figures are used, no command lost in the split.

``docs/results.md`` is a front page; the measurements live in one page per
family under ``docs/results/``. Pure text: nothing here imports JAX.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FRONT = DOCS / "results.md"
PAGES = sorted((DOCS / "results").glob("*.md"))
RESULTS = [FRONT, *PAGES]

#: Every line of the single-page docs/results.md (commit 851c5a4) that starts,
#: after its indentation, with one of these: the commands that produced the
#: tables and figures, one a line, deduplicated and sorted (``commands``).
COMMANDS = REPO / "tests" / "data" / "results_commands.txt"
COMMAND_PREFIXES = ("python -m sparsejax", ".venv/bin/python")


def commands(text: str) -> list[str]:
  """The lines of ``text`` that start a command (how COMMANDS was written)."""
  lines = (line.strip() for line in text.splitlines())
  return sorted({line for line in lines if line.startswith(COMMAND_PREFIXES)})


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prose(text: str) -> str:
  """``text`` without fenced code blocks and inline code spans."""
  text = re.sub(r"^ *```.*?^ *```[^\n]*$", "", text, flags=re.M | re.S)
  return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: pathlib.Path) -> set[str]:
  """The anchors of the page's headings, GitHub's ``-1``, ``-2`` for repeats included."""
  seen: dict[str, int] = {}
  out = set()
  for match in re.finditer(r"^#{1,6} +(.+?) *#* *$", prose(path.read_text()), flags=re.M):
    base = slug(match.group(1))
    n = seen.get(base, 0)
    seen[base] = n + 1
    out.add(base if n == 0 else f"{base}-{n}")
  return out


def links(path: pathlib.Path) -> list[str]:
  """The targets of the page's Markdown links and images, outside code."""
  return re.findall(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)", prose(path.read_text()))


def test_the_split_pages_exist():
  assert FRONT.is_file()
  assert len(PAGES) >= 2


def test_slug_follows_githubs_rule():
  assert slug("Sparse training beside jaxpruner: LeNet-300-100 on MNIST — 2026-12-06") == (
      "sparse-training-beside-jaxpruner-lenet-300-100-on-mnist--2026-12-06")
  assert slug("LeNet-300-100 (266,610 parameters), 3 seeds, mean +- std") == (
      "lenet-300-100-266610-parameters-3-seeds-mean---std")
  assert slug("BMRS: the paper's BMRS_N") == "bmrs-the-papers-bmrs_n"


@pytest.mark.parametrize("page", RESULTS, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_relative_link_and_anchor_resolves(page):
  broken = []
  for target in links(page):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
      continue
    file, _, anchor = target.partition("#")
    resolved = (page.parent / file).resolve() if file else page
    if not resolved.exists():
      broken.append(f"{target}: no file {resolved}")
    elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
      broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
  assert not broken, "\n".join(broken)


def test_every_figure_is_used_by_a_page():
  text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
  unused = [f.name for f in sorted((DOCS / "figures").glob("*.png")) if f.name not in text]
  assert not unused, unused


def test_no_command_lost_in_the_split():
  frozen = COMMANDS.read_text().splitlines()
  assert frozen == sorted(set(frozen)) and len(frozen) > 50
  text = "\n".join(p.read_text() for p in RESULTS)
  lost = [line for line in frozen if line not in text]
  assert not lost, "\n".join(lost)


def test_the_front_page_links_every_page():
  linked = {(FRONT.parent / t.partition("#")[0]).resolve() for t in links(FRONT)}
  missing = [p.name for p in PAGES if p.resolve() not in linked]
  assert not missing, missing


def test_every_page_has_one_title():
  for page in PAGES:
    titles = re.findall(r"^# ", prose(page.read_text()), flags=re.M)
    assert page.read_text().startswith("# ") and len(titles) == 1, page.name
