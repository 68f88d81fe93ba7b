"""The `atelier` command: run the bot, write a config, check a set-up, generate from the
terminal, manage the database, and print usage and audit reports."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from engine.protocol import ControlType

from .config import Config, ConfigError, load_config
from .defaults import CONFIG_FILE, builtin_config, with_default_model, with_device
from .ops.logs import secrets_in, setup_logging

log = logging.getLogger("atelier")

EXIT_USAGE = 2
TOKEN_HELP = "https://discord.com/developers/applications → your application → Bot → Reset Token"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: ./config.toml if there is one,"
        " else the built-in defaults)",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the Discord bot (token from DISCORD_TOKEN)")
    _add_config(run)
    run.add_argument(
        "--model",
        default=None,
        help="default model: a configured name, a Hugging Face repo id or a path",
    )
    run.add_argument("--device", default=None, help="run one engine on this device (cuda:0, cpu)")

    init = commands.add_parser("init", help="write a commented config.toml from the defaults")
    init.add_argument(
        "--config",
        type=Path,
        default=Path(CONFIG_FILE),
        help="file to write (default: ./config.toml)",
    )
    init.add_argument("--token-env", default=None, help="read the token from this variable")
    init.add_argument("--token-file", default=None, help="... or from this file")
    init.add_argument("--model", default=None, help="default model: repo id or path")
    init.add_argument("--device", default=None, help="cuda:0, cuda:1, ... or cpu")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    doctor = commands.add_parser(
        "doctor", help="check a set-up: token, models, GPU, disk, database"
    )
    _add_config(doctor)
    doctor.add_argument("--offline", action="store_true", help="do not ask Discord")

    worker = commands.add_parser(
        "worker",
        help="run this host's engines on the shared queue, without Discord or HTTP"
        " (docs/operations.md, 'Several GPU hosts')",
    )
    _add_config(worker)

    serve = commands.add_parser(
        "serve", help="run only the HTTP API and the engines, without Discord (no token needed)"
    )
    _add_config(serve)

    generate = commands.add_parser("generate", help="make images in the terminal, no Discord")
    generate.add_argument(
        "prompt", help='what to draw; flags and choices work too: "a {red, blue} fox --ar 21:9"'
    )
    _add_config(generate)
    generate.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    generate.add_argument("--negative", default=None)
    generate.add_argument("--model", default=None)
    generate.add_argument("--count", type=int, default=None)
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--steps", type=int, default=None)
    generate.add_argument("--cfg", type=float, default=None)
    generate.add_argument("--aspect", default=None, help="W:H from 1:4 to 4:1, e.g. 16:9")
    generate.add_argument("--sampler", default=None, help="e.g. Euler a, DPM++ 2M Karras")
    generate.add_argument("--image", type=Path, help="init image: image-to-image")
    generate.add_argument("--mask", type=Path, help="with --image: white = repaint (inpainting)")
    generate.add_argument("--control", type=Path, help="sketch or photo for a ControlNet")
    generate.add_argument("--control-type", choices=[t.value for t in ControlType], default=None)
    generate.add_argument("--control-scale", type=float, default=None)
    generate.add_argument("--strength", type=float, default=None, help="0.05-1.0 (--image)")
    generate.add_argument("--device", default=None, help="default: the first [engine] device")

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations (the bot does on start)")
    _add_config(upgrade)

    usage = commands.add_parser("usage", help="top members and daily usage for a period")
    _add_config(usage)
    usage.add_argument(
        "--since",
        type=_duration,
        default=timedelta(days=7),
        help="period: 90m, 24h, 7d, 2w (default: 7d)",
    )
    usage.add_argument("--user", type=int, default=None, help="one member's Discord id")

    audit = commands.add_parser("audit", help="audit log entries, newest first")
    _add_config(audit)
    audit.add_argument("--user", type=int, default=None, help="by or about this Discord id")
    audit.add_argument("--action", default=None, help='an action or family, e.g. "quota"')
    audit.add_argument("--since", type=_duration, default=None, help="e.g. 24h, 7d (default: all)")
    audit.add_argument("--limit", type=int, default=50, help="entries to show (default: 50)")
    audit.add_argument("--offset", type=int, default=0, help="entries to skip, for paging")

    commands.add_parser(
        "bench",
        help="the benchmark suite (python -m bench, from a source checkout); "
        "'atelier bench --help' lists its options",
        add_help=False,
    )

    tiny = commands.add_parser(
        "tiny-model", help="write a tiny random-weight model for smoke tests (no download)"
    )
    tiny.add_argument("dir", type=Path)
    tiny.add_argument(
        "--all",
        action="store_true",
        help="also SDXL, a ControlNet, an inpainting model and a preview decoder, a folder each",
    )
    return parser


def _duration(text: str) -> timedelta:
    from .reports.period import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def read_token(config: Config) -> str:
    """The bot token from `[discord] token_file`, else from the `token_env` variable; "" if none."""
    if config.discord.token_file is not None:
        try:
            return config.discord.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            return ""
    return os.environ.get(config.discord.token_env, "").strip()


def token_source(config: Config) -> str:
    if config.discord.token_file is not None:
        return f"the file {config.discord.token_file}"
    return config.discord.token_env


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file a command reads: --config, else ./config.toml if present, else None."""
    if args.config is None and Path(CONFIG_FILE).is_file():
        return Path(CONFIG_FILE)
    path: Path | None = args.config
    return path


def _resolve_config(
    args: argparse.Namespace, detect_device: bool = False, check_sources: bool = True
) -> Config:
    """--config if given; else ./config.toml if present; else the built-in defaults, on
    the device `choose_device` finds when `detect_device`, else the CPU.

    `atelier run --model/--device` apply on top (generate's flags of those names pick
    among the configured models and devices instead).
    """
    path = config_path(args)
    model, device = (args.model, args.device) if args.command == "run" else (None, None)
    if path is not None:
        config = load_config(path, check_sources)
        if model is not None:
            config = with_default_model(config, model, Path.cwd())
        return config if device is None else with_device(config, device)
    if device is None and detect_device:
        from .ops.gpu import choose_device

        choice = choose_device()
        device = choice.device
        log.info("no config file: built-in defaults, engine on %s (%s)", device, choice.reason)
        if choice.warning:
            log.warning("%s", choice.warning)
    return builtin_config(model, device or "cpu", Path.cwd())


def _run(args: argparse.Namespace) -> int:
    # Imported here, not above: `atelier worker` never loads Discord.
    import discord

    from .app import DiscordUnreachable, run_bot
    from .http.server import CannotListen

    try:
        config = _resolve_config(args)
        token = read_token(config)
        if not token:
            print(
                f"atelier: no Discord bot token in {token_source(config)}: get one at"
                f" {TOKEN_HELP}, then `export {config.discord.token_env}=...`",
                file=sys.stderr,
            )
            return EXIT_USAGE
        setup_logging(config.logging, args.verbose, secrets=[token, *secrets_in(os.environ)])
        # Only now: finding the device may import torch in a child (seconds).
        config = _resolve_config(args, detect_device=True)
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    from .ops.service import MetricsUnavailable

    try:
        asyncio.run(run_bot(config, token))
    except MetricsUnavailable as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    except discord.LoginFailure:
        print(
            f"atelier: Discord refused the token in {token_source(config)} (reset it at"
            f" {TOKEN_HELP})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except CannotListen as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DiscordUnreachable as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 1
    return 0


def _serve(config: Config) -> int:
    from .app import serve_http
    from .http.server import CannotListen

    try:
        asyncio.run(serve_http(config))
    except CannotListen as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _worker(config: Config) -> int:
    from .worker import NoEngines, run_worker

    try:
        asyncio.run(run_worker(config))
    except NoEngines as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _upgrade(config: Config) -> int:
    from .store.migrate import upgrade

    backup = upgrade(config.database_url)
    print("database is up to date" + (f" (backup of the old one: {backup})" if backup else ""))
    return 0


def _tiny_model(directory: Path, everything: bool) -> int:
    # The engine package owns torch; the bot side only starts it.
    flags = ["--all"] if everything else []
    return subprocess.call([sys.executable, "-m", "engine.tiny", *flags, str(directory)])


def _bench(arguments: Sequence[str]) -> int:
    # The suite lives beside the packages in a checkout (it drives the bot as a
    # separate process and imports torch), so it is run there, never imported here.
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "bench" / "__main__.py").is_file():
        print(
            "atelier: the benchmark suite runs from a source checkout of Atelier"
            " (bench/ is not installed with the package): run `python -m bench` there",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return subprocess.call([sys.executable, "-m", "bench", *arguments], cwd=checkout)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:  # every option after it is the suite's
        return _bench(arguments[1:])
    args = make_parser().parse_args(arguments)
    setup_logging(None, args.verbose)
    if args.command == "tiny-model":
        return _tiny_model(args.dir, args.all)
    if args.command == "run":
        return _run(args)
    if args.command == "init":
        from .ops.init import init

        return init(args)
    try:
        # The doctor names each missing model source itself, with the other problems.
        config = _resolve_config(args, check_sources=args.command != "doctor")
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    token = read_token(config)
    setup_logging(config.logging, args.verbose, secrets=[token, *secrets_in(os.environ)])
    if args.command == "doctor":
        from .ops.doctor import doctor

        print(f"config: {config_path(args) or 'built-in defaults (no config.toml here)'}")
        return asyncio.run(doctor(config, token, token_source(config), offline=args.offline))
    if args.command == "serve":
        return _serve(config)
    if args.command == "worker":
        return _worker(config)
    if args.command == "db":
        return _upgrade(config)
    if args.command in ("usage", "audit"):
        from .reports.terminal import print_report

        return asyncio.run(print_report(config, args))
    from .generate import generate

    return asyncio.run(generate(config, args))


if __name__ == "__main__":
    sys.exit(main())
