"""`python -m bench [--items ...] [--smoke] [--name NAME]`: run the suite, write the results.

Runs every item the machine can run (the GPU item needs CUDA and says so when it
is skipped), prints the markdown table, and writes bench/results/<name>.json and
<name>.md (or into --out).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from .context import Context, Options, Sizes, say
from .report import (
    RESULTS,
    Report,
    Section,
    describe_machine,
    git_commit,
    library_versions,
    markdown,
    python_is_quiet,
)

# Item name -> its module under bench.items, imported only when it runs (torch is slow
# to import, and a wrong option should be answered at once).
ITEMS: dict[str, str] = {
    "overhead": "overhead",
    "batching": "batching",
    "previews": "previews",
    "bot": "botproc",
    "store": "store",
    "gpu": "gpu",
    "cache": "cache",
    "scale": "scale",
}


def _names(text: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    return names


def _batches(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes are numbers: {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes are 1 or more: {text!r}")
    return sizes


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--items",
        type=lambda text: _names(text, list(ITEMS), "item"),
        default=tuple(ITEMS),
        help=f"comma-separated, in this order: {','.join(ITEMS)} (default: all)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="toy sizes, a few seconds per item; the GPU item's code runs on the CPU",
    )
    parser.add_argument("--name", help="results file name (default: date, device, smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"folder (default: {RESULTS})")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--gpu-models",
        type=lambda text: _names(text, ["sd15", "sdxl"], "model"),
        default=("sd15", "sdxl"),
        help="architectures of the GPU item (default: sd15,sdxl)",
    )
    parser.add_argument(
        "--gpu-batches",
        type=_batches,
        default=None,
        help="max_batch_images settings of the GPU throughput runs (default: 1,2,4,8; smoke 1,2)",
    )
    parser.add_argument(
        "--no-compile",
        dest="gpu_compile",
        action="store_false",
        help="the engine side of the GPU item without torch.compile (faster to start)",
    )
    parser.add_argument(
        "--compile-mode",
        default="max-autotune",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="[engine] compile_mode for the GPU item (default: max-autotune)",
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch CPU threads in this process and the bot's engines (default: 1, steady on"
        " a shared machine, where a pool larger than the free cores stalls; 0: torch's choice)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the GPU's dense fp16/bf16 TFLOP/s, if bench.items.gpu does not know it",
    )
    return parser


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return "cpu (no CUDA device: torch.cuda.is_available() is False)"


def _quiet_libraries() -> None:
    import diffusers.utils.logging
    import transformers.utils.logging

    for library in (diffusers.utils.logging, transformers.utils.logging):
        quiet: Any = library
        quiet.set_verbosity_error()
        quiet.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


async def run_items(report: Report, context: Context, items: Sequence[str]) -> int:
    failures = 0
    try:
        for item in items:
            module: ModuleType = importlib.import_module(f"bench.items.{ITEMS[item]}")
            section = Section(item=item, title=str(module.TITLE))
            report.sections.append(section)
            started = time.perf_counter()
            runner: Callable[[Context, Section], Awaitable[None]] = module.run
            outcome = "done"
            try:
                await runner(context, section)
            except Exception as error:
                failures += 1
                traceback.print_exc()
                section.skipped = f"failed: {type(error).__name__}: {error}"
                outcome = "failed"
            if outcome == "done" and section.skipped:
                outcome = "skipped"
            section.seconds = round(time.perf_counter() - started, 1)
            say(f"{item}: {outcome} in {section.seconds:g} s")
    finally:
        await context.close()
    return failures


def _cpu_threads(count: int) -> None:
    """The same torch thread count here and in every engine process started from here."""
    if count < 1:
        return
    import torch

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(count)
    torch.set_num_threads(count)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    _cpu_threads(args.cpu_threads)
    python_is_quiet()
    _quiet_libraries()
    device = _device()
    slug = "cpu" if device.startswith("cpu") else device.split("(")[0].strip().replace(" ", "-")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    name = args.name or f"{stamp}-{slug.lower()}" + ("-smoke" if args.smoke else "")
    report = Report(
        name=name, smoke=args.smoke, argv=list(argv if argv is not None else sys.argv[1:])
    )
    report.machine = describe_machine()
    report.device = device
    report.commit = git_commit()
    report.versions = library_versions()
    batches = args.gpu_batches or ((1, 2) if args.smoke else (1, 2, 4, 8))
    options = Options(
        smoke=args.smoke,
        gpu_models=args.gpu_models,
        gpu_compile=args.gpu_compile,
        gpu_compile_mode=args.compile_mode,
        gpu_batches=batches,
        peak_tflops=args.peak_tflops,
    )
    workdir = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    say(f"scratch folder {workdir}; items: {', '.join(args.items)}")
    try:
        context = Context(workdir, Sizes.smoke() if args.smoke else Sizes.full(), options)
        failures = asyncio.run(run_items(report, context, args.items))
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    data, table = report.write(args.out)
    print(markdown(report))
    say(f"wrote {data} and {table}")
    return 1 if failures else 0
