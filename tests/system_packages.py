"""Debian packages the tests need (PostgreSQL's server, Chromium), installed by the
tests themselves where they are missing, so a fresh machine runs README's test command
as it is."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

# Two xdist workers may both find a package missing: one installs, the other waits.
INSTALL_LOCK = Path(tempfile.gettempdir()) / "atelier-tests-apt.lock"


def install_if_missing(package: str, installed: Callable[[], bool]) -> None:
    """Install `package` with apt-get when `installed()` is false and this is root on a
    Debian-like system; otherwise leave it to the caller to say what is missing."""
    if installed() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            check=True,
            env=env,
        )
