"""The test command a newcomer runs is CI's, and installs the versions CI tests; the bot
installs and runs without the engine extra (torch and the rest), a GPU host adds it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.installs import (
    closure,
    engine_only_distributions,
    modules_of,
    requirements,
    without_engine,
)

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
    # The tests run the engine, so they install it.
    assert '-e ".[engine,test]" -c constraints.txt' in readme


def test_the_readme_runs_the_bot_with_its_engine() -> None:
    # One machine runs the bot and its engines: the first command installs both.
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[engine]" && DISCORD_TOKEN=... atelier run\n' in readme


def test_the_constraints_pin_every_dependency_but_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {
        canonicalize_name(Requirement(raw).name)
        for extra in ("engine", "test")
        for raw in project["dependencies"] + project["optional-dependencies"][extra]
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


# What the GPU side brings; none of it may reach a front door's install.
ENGINE_ONLY = {
    "torch", "diffusers", "transformers", "safetensors", "accelerate", "opencv-python-headless",
    "scipy", "compel", "torchsde", "nudenet", "onnxruntime",
}  # fmt: skip


def third_party_imports(package: str) -> set[str]:
    """The top-level modules a package of this repository imports, outside the stdlib."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"bot", "engine", "migrations"}


def test_the_core_install_carries_no_torch_and_the_engine_extra_does() -> None:
    core = closure(requirements())
    assert not core & ENGINE_ONLY, core & ENGINE_ONLY
    assert engine_only_distributions() >= ENGINE_ONLY


def test_the_core_install_has_every_module_the_bot_imports() -> None:
    missing = third_party_imports("bot") - modules_of(closure(requirements()))
    assert not missing, f"imported by bot/ but not installed by `pip install -e .`: {missing}"


def test_the_engine_extra_has_every_module_the_engine_imports() -> None:
    installed = modules_of(closure(requirements()) | closure(requirements("engine")))
    # pynvml: the gpu extra's nvidia-ml-py, optional (the engine reads torch's figures without).
    missing = third_party_imports("engine") - installed - {"pynvml"}
    assert not missing, f'imported by engine/ but not installed by ".[engine]": {missing}'


def test_every_bot_module_imports_without_the_engine_extra() -> None:
    # Every module, not only those a start loads: a command's lazy imports live in them.
    code = (
        "import pkgutil, importlib, bot\n"
        "names = [m.name for m in pkgutil.walk_packages(bot.__path__, 'bot.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = subprocess.run(without_engine(code), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100


def test_the_blocker_stands_for_a_missing_engine_extra() -> None:
    # The check above would prove nothing if torch stayed importable under it.
    done = subprocess.run(
        without_engine("import engine.pipelines\n"), cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'torch'" in done.stderr
