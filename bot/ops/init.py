"""`atelier init`: write a commented config.toml from the built-in defaults.

Three choices differ between machines: where the token comes from, the
default model and the device. Flags give them; with a terminal on stdin the
command asks for whatever no flag gave, showing the default; otherwise
(a script, CI) the defaults stand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, config_from_dict
from ..defaults import DEFAULT_MODEL_SOURCE, builtin_raw, render_config
from .gpu import choose_device

EXIT_USAGE = 2

Ask = Callable[[str, str], str]


def ask_terminal(question: str, default: str) -> str:
    answer = input(f"{question} [{default}]: ").strip()
    return answer or default


def init(args: argparse.Namespace, ask: Ask | None = None) -> int:
    path: Path = args.config
    if path.exists() and not args.force:
        print(f"atelier: {path} exists; pass --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    if ask is None and sys.stdin.isatty():
        ask = ask_terminal

    def choose(given: str | None, question: str, default: Callable[[], str]) -> str:
        if given is not None:
            return given
        return ask(question, default()) if ask is not None else default()

    token_env, token_file = args.token_env, args.token_file
    if token_env is None and token_file is None:
        where = choose(
            None, "Bot token from an environment variable (env) or a file (file)?", lambda: "env"
        )
        if where == "file":
            token_file = choose(None, "File holding the token", lambda: "discord-token.txt")
        else:
            token_env = choose(
                None, "Environment variable holding the token", lambda: "DISCORD_TOKEN"
            )
    model = choose(
        args.model,
        "Default model (Hugging Face repo id, folder or file)",
        lambda: DEFAULT_MODEL_SOURCE,
    )
    device = choose(
        args.device, "Device (cuda:0, cuda:1, ... or cpu)", lambda: choose_device().device
    )

    raw: dict[str, Any] = builtin_raw(model, device)
    discord = raw.setdefault("discord", {})
    if token_file is not None:
        discord["token_file"] = token_file
    else:
        discord["token_env"] = token_env or "DISCORD_TOKEN"
    try:
        config_from_dict(raw, path.parent.resolve(), str(path))  # refuse what would not load
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    config = Config.model_validate(raw)  # paths as written, not resolved
    source = f"the file {token_file}" if token_file else f"${discord['token_env']}"
    path.write_text(render_config(config, source), encoding="utf-8")
    print(f"wrote {path}; start the bot with: atelier run --config {path}")
    return 0
