"""The method notes live in the repository and every section the code cites exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "method.md"


def _sections() -> set[str]:
    headings = re.findall(r"^###? ([A-E](?:\.\d+)?)\b", METHOD.read_text(), flags=re.M)
    return set(headings)


def test_readme_points_inside_the_repository() -> None:
    readme = (REPO / "README.md").read_text()
    assert "../shared" not in readme
    assert "(docs/method.md)" in readme and METHOD.is_file()


def test_every_cited_section_exists_in_the_method_notes() -> None:
    sections = _sections()
    # The numbering the code has always cited ("spec A.10" -> "docs/method.md A.10").
    expected = {f"A.{i}" for i in range(1, 12)} | {f"B.{i}" for i in range(1, 5)}
    expected |= {f"C.{i}" for i in range(1, 8)} | {f"D.{i}" for i in range(1, 6)} | {"E.1", "E.2"}
    assert expected <= sections
    cited = set()
    for path in [*REPO.glob("sjc_dsds/**/*.py"), *REPO.glob("tests/*.py"), REPO / "README.md"]:
        text = path.read_text()
        cited |= {
            (path.name, s) for s in re.findall(r"(?:spec|docs/method\.md) ([A-E]\.\d+)", text)
        }
    missing = sorted((name, s) for name, s in cited if s not in sections)
    assert not missing, missing


def test_decisions_are_numbered_and_record_the_bare_view_phrase() -> None:
    text = METHOD.read_text()
    decisions = text[text.index("## Decisions") : text.index("## A.")]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. \*\*", decisions, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 10
    assert "`side view of `" in decisions and "bare view phrase" in decisions


def test_the_package_has_no_import_cycles() -> None:
    from experiment_scripts import load_experiment

    module = load_experiment("import_graph")
    graph = module.import_graph()
    assert {"sjc_dsds.optimize", "sjc_dsds.evaluate", "sjc_dsds.families"} <= graph.keys()
    assert "sjc_dsds.evaluate" in graph["sjc_dsds.optimize"]  # lazy imports are seen too
    assert module.find_cycles(graph) == []
    assert module.find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert "sjc_dsds.cli" not in graph["sjc_dsds"]  # the package does not import the CLI
