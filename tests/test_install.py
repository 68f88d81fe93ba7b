"""The test command a newcomer runs is CI's, and installs the versions CI tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)")


def command_of(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("pip install torch==")]
    return line


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            match = PIN.fullmatch(line)
            assert match, f"not an exact pin: {line!r}"
            found[canonicalize_name(match[1])] = match[2]
    return found


def test_readme_and_ci_run_the_same_test_command_with_the_constraints() -> None:
    readme = command_of((REPO / "README.md").read_text())
    assert readme == command_of((REPO / ".ci" / "run").read_text())
    assert '-e ".[test]" -c constraints.txt' in readme


def test_the_constraints_pin_every_dependency_but_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {
        canonicalize_name(Requirement(raw).name)
        for raw in project["dependencies"] + project["optional-dependencies"]["test"]
    }
    pinned = pins()
    assert wanted - {"torch"} <= set(pinned), wanted - set(pinned)
    assert "torch" not in pinned and "atelier-bot" not in pinned
    # What the fuzz test's requests are made by.
    assert {"schemathesis", "hypothesis", "hypothesis-graphql"} <= set(pinned)


def test_the_readme_links_to_pages_that_exist() -> None:
    # mkdocs build --strict (scripts/check) checks the links inside docs/; README is outside it.
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#")[0] for t in targets if "://" not in t and not t.startswith("#")]
    assert "docs/index.md" in local
    missing = [t for t in local if not (REPO / t).is_file()]
    assert not missing, missing
