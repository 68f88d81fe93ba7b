"""deploy/: the Grafana dashboard queries only metrics the endpoint exports; the unit runs it."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\batelier_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name /metrics can carry, from the families its registry declares."""
    metrics = Metrics(queries=None, engines=[])  # type: ignore[arg-type]
    text = generate_latest(metrics.registry).decode()
    # Counters' `_created` time stamps are no metric to chart.
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
        for suffix in SUFFIXES[family.type]
    }


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC.findall(target["expr"])
    }
    exported = exported_names()
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, sorted(queried - exported)
    # ... and every family the endpoint exports has a panel.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in queried}
    assert families <= shown, sorted(families - shown)


def test_the_systemd_unit_runs_atelier_with_a_credential_and_stops_it_with_sigterm() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "atelier.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[1:3] == ["run", "--config"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["LoadCredential"].startswith("discord-token:")
    assert service["RestartPreventExitStatus"] == "2"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
