"""The `atelier` command: run the bot, generate from the terminal, manage the database,
and print usage and audit reports."""

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

import discord

from engine.protocol import ControlType

from .config import Config, ConfigError, load_config

EXIT_USAGE = 2


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config.toml"),
                        help="TOML config file (default: ./config.toml)")  # fmt: skip


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the Discord bot (token from DISCORD_TOKEN)")
    _add_config(run)

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
    usage.add_argument("--since", type=_duration, default=timedelta(days=7),
                       help="period: 90m, 24h, 7d, 2w (default: 7d)")  # fmt: skip
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
        "--all", action="store_true",
        help="also SDXL, a ControlNet, an inpainting model and a preview decoder, a folder each",
    )  # fmt: skip
    return parser


def _duration(text: str) -> timedelta:
    from .reports.period import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # discord.py's gateway chatter and Alembic's plugin list are noise at INFO.
    for noisy in ("discord", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(config: Config) -> int:
    from .app import run_bot
    from .http.server import CannotListen

    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        print("atelier: set DISCORD_TOKEN to your bot's token (see README.md)", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(run_bot(config, token))
    except discord.LoginFailure:
        print("atelier: Discord refused the token in DISCORD_TOKEN", file=sys.stderr)
        return EXIT_USAGE
    except CannotListen as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
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
    _setup_logging(args.verbose)
    if args.command == "tiny-model":
        return _tiny_model(args.dir, args.all)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run(config)
    if args.command == "serve":
        return _serve(config)
    if args.command == "db":
        return _upgrade(config)
    if args.command in ("usage", "audit"):
        from .reports.terminal import print_report

        return asyncio.run(print_report(config, args))
    from .generate import generate

    return asyncio.run(generate(config, args))


if __name__ == "__main__":
    sys.exit(main())
