"""What a run measured, where it ran, and the two files it writes (JSON and a markdown table)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
LIBRARIES = (
    "torch",
    "diffusers",
    "transformers",
    "discord.py",
    "SQLAlchemy",
    "aiosqlite",
    "pydantic",
)

Value = float | int | str | bool | None


@dataclass
class Figure:
    """One result: `ratio` is `numerator` / `denominator`, both measured in this run;
    `values` are the absolute numbers (units in their names) it was computed from."""

    name: str
    ratio: float | None
    ratio_means: str
    values: dict[str, Value]
    target: str | None = None
    met: bool | None = None


@dataclass
class Section:
    """One item of the suite: its figures, or why it was skipped."""

    item: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


@dataclass
class Report:
    name: str
    smoke: bool
    argv: list[str]
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict[str, Value] = field(default_factory=dict)
    device: str = "cpu"
    commit: str = "unknown"
    versions: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"{self.name}.json"
        table = folder / f"{self.name}.md"
        data.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        table.write_text(markdown(self), encoding="utf-8")
        return data, table


def describe_machine() -> dict[str, Value]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb: float | None = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        memory_gb = round(int(first[1]) / 2**20, 1)
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    changed = [
        line for line in git("status", "--porcelain").splitlines() if "bench/results/" not in line
    ]
    return commit + ("+changes" if changed else "")


def _number(value: Value) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 100_000:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    machine = report.machine
    versions = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    lines = [
        f"# Atelier benchmark: {report.name}" + (" (smoke: toy sizes)" if report.smoke else ""),
        "",
        f"- date: {report.started}",
        f"- machine: {machine.get('cpu')}, {machine.get('cpus')} CPUs, {machine.get('memory_gb')}"
        f" GB, {machine.get('os')}; load average at start {machine.get('load_average_1m')}",
        f"- device: {report.device}",
        f"- commit: {report.commit}",
        f"- versions: {versions}",
        f"- command: `{' '.join(['python -m bench', *report.argv])}`",
        "",
        "| item | figure | ratio | absolute numbers | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for section in report.sections:
        if section.skipped:
            lines.append(f"| {section.item} | skipped | | {_cell(section.skipped)} | |")
            continue
        for figure in section.figures:
            ratio = "n/a" if figure.ratio is None else f"{figure.ratio:.3g}"
            values = ", ".join(f"{key} {_number(value)}" for key, value in figure.values.items())
            target = figure.target or ""
            if figure.met is not None:
                target += " (met)" if figure.met else " (NOT met)"
            lines.append(
                f"| {section.item} | {_cell(figure.name)} | {ratio} ({_cell(figure.ratio_means)})"
                f" | {_cell(values)} | {_cell(target)} |"
            )
    notes = [(s.item, note) for s in report.sections for note in s.notes]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {item}: {note}" for item, note in notes]
    return "\n".join(lines) + "\n"


def python_is_quiet() -> None:
    """Library progress bars and notices would drown the bench's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.warnoptions:
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
