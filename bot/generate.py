"""`atelier generate`: the jobs of one prompt through the real engine process, in the terminal.

The prompt speaks the whole prompt language ({a, b} choices, --n, --style, ...);
its jobs run one after another on one engine.
"""

from __future__ import annotations

import argparse
import sys

from engine.protocol import JobError, Progress

from .config import Config
from .jobs.engine_client import EngineFailure, EngineProcess
from .jobs.inputs import ROLES, save_inputs
from .jobs.spec import BadInput, Inputs, Options, build_specs
from .render import progress_bar
from .store.models import new_id
from .wiring import engine_environment


def _show_progress(progress: Progress) -> None:
    bar = progress_bar(progress.step, progress.total, width=30)
    end = "\n" if progress.step >= progress.total else ""
    print(f"\r{bar} {progress.step}/{progress.total}", end=end, file=sys.stderr, flush=True)


def _inputs(args: argparse.Namespace, config: Config) -> Inputs:
    """Check and copy the --image/--mask/--control files into the output folder."""
    given = {role: getattr(args, role) for role in ROLES if getattr(args, role) is not None}
    attachments = {}
    for role, path in given.items():
        try:
            attachments[role] = path.read_bytes()
        except OSError as error:
            raise BadInput(f"--{role} {path}: {error.strerror}") from None
    out = args.out.resolve()
    max_bytes = int(config.generation.max_attachment_mb * 2**20)
    if not attachments:
        return Inputs()
    inputs = save_inputs(attachments, out / "inputs", out, max_bytes)
    for notice in inputs.notices:
        print(f"atelier: {notice}", file=sys.stderr)
    return inputs


async def generate(config: Config, args: argparse.Namespace) -> int:
    options = Options(
        prompt=args.prompt,
        negative_prompt=args.negative,
        model=args.model,
        aspect=args.aspect,
        count=args.count,
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        strength=args.strength,
        control_type=args.control_type,
        control_scale=args.control_scale,
    )
    try:
        specs = build_specs(
            options,
            config.models,
            config.engine.default_model,
            _inputs(args, config),
            None,
            config.styles,
            config.generation.max_permutations,
            loras=config.loras,
        )
    except BadInput as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    # A front door's config may list no device: the CPU then.
    device = args.device or next(iter(config.engine.devices), "cpu")
    engine = EngineProcess(
        device,
        config.models,
        engine_environment(),
        config.engine.model_memory_gb,
        config.engine.speed(),
        config.moderation.classifier(),
        config.loras,
    )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    try:
        await engine.start()
        for spec in specs:
            if len(specs) > 1:
                print(f"{spec.prompt}", file=sys.stderr)
            job_id = new_id()
            # A batch of this one job; the progress bar is printed inline, which is instant.
            outcomes = await engine.run(
                spec.to_request(job_id, out, out), _show_progress, config.engine.job_timeout
            )
            result = outcomes[job_id]
            if isinstance(result, JobError):
                print(f"\natelier: {result.message}", file=sys.stderr)
                return 1
            for image in result.images:
                line = f"{image.path}  seed {image.seed}  {image.width}x{image.height}"
                if image.verdict is not None and image.verdict.flagged:
                    label, score = image.verdict.top
                    line += f"  flagged by the image filter ({label} {score:.2f})"
                print(line)
            print(f"{len(result.images)} image(s) in {result.gpu_seconds:.2f} s", file=sys.stderr)
    except EngineFailure as error:
        print(f"\natelier: {error}", file=sys.stderr)
        return 1
    finally:
        await engine.stop()
    return 0
