"""What each install of Atelier brings (pyproject's dependencies and extras, followed through
the installed packages' own metadata), and a way to run the bot as if the engine extra were
not installed: its packages' modules made unimportable in that process."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

# Run by `python -c` before `code`, with the blocked modules (JSON) as its first argument:
# every import of those modules fails in this process as it would where they are not
# installed (a child it starts, such as the engine, is unaffected).
BLOCKER = """
import importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (no engine extra)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled(json.loads(sys.argv.pop(1))))
"""
ATELIER = 'sys.argv[0] = "atelier"\nfrom bot.cli import main\nsys.exit(main())\n'


def requirements(extra: str | None = None) -> list[Requirement]:
    """pyproject's core dependencies, or one extra's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in raw]


def closure(wanted: list[Requirement]) -> set[str]:
    """Every distribution these requirements install on this machine (the extras they name
    followed, markers evaluated), by canonical name, read from the installed metadata."""
    seen: set[tuple[str, str]] = set()
    todo = [(requirement, "") for requirement in wanted]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        for wanted_extra in {"", *requirement.extras} - {e for n, e in seen if n == name}:
            seen.add((name, wanted_extra))
            for line in importlib.metadata.distribution(name).requires or []:
                todo.append((Requirement(line), wanted_extra))
    return {name for name, _ in seen}


def engine_only_distributions() -> set[str]:
    return closure(requirements("engine")) - closure(requirements())


def modules_of(distributions: set[str]) -> set[str]:
    """The top-level modules these distributions install."""
    return {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if {canonicalize_name(owner) for owner in owners} & distributions
    }


def without_engine(code: str = ATELIER, arguments: tuple[str, ...] = ()) -> list[str]:
    """The command that runs `code` (by default `atelier <arguments>`) with the engine
    extra's modules missing."""
    blocked = sorted(modules_of(engine_only_distributions()))
    return [sys.executable, "-c", BLOCKER + code, json.dumps(blocked), *arguments]
