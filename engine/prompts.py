"""A job's prompt embeddings through compel: weighted words, long prompts and blends.

compel reads its own weighting syntax (`word+`, `word++`, `word-`, `(a phrase)1.3`);
`compel_syntax` first rewrites the AUTOMATIC1111 forms members also type, `(word:1.3)`
and `[word]`, into it. Prompts are not cut at the text encoder's 77 tokens: compel
encodes a long one in 77-token chunks, so its embedding is longer, and the prompt and
negative prompt are padded to the same length (with the empty prompt's chunk) as
compel documents. A blend (weighted prompts: the HTTP API's `text_prompts`, the
prompt language's `a::2 b::1`) is every part encoded on its own, padded alike and
averaged in proportion to the weights; one prompt is a blend of one part.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

import torch
from compel import Compel, CompelForSDXL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from engine.checkpoints import Family

# `(text:1.3)`: the innermost parentheses holding text and a weight after a colon.
_WEIGHTED = re.compile(r"\(([^():]+):\s*([0-9]*\.?[0-9]+)\s*\)")
# `[text]`: the innermost square brackets, AUTOMATIC1111's weight 1/1.1.
_LESSENED = re.compile(r"\[([^\[\]]+)\]")


def compel_syntax(text: str) -> str:
    """`text` with `(word:1.3)` written as compel's `(word)1.3` and `[word]` as
    compel's `(word)-` (weight 0.9), nested brackets from the inside out."""
    text = _WEIGHTED.sub(r"(\1)\2", text)
    while (lessened := _LESSENED.sub(r"(\1)-", text)) != text:
        text = lessened
    return text


def prompt_embeddings(
    pipeline: DiffusionPipeline,
    family: Family,
    parts: Sequence[tuple[str, float]],
    negative_prompt: str,
) -> dict[str, torch.Tensor]:
    """The pipeline call's embedding arguments for one image: `parts` (text, weight)
    blended by weight, and the negative prompt, all of one length (a multiple of 77)."""
    texts = [compel_syntax(text) for text, _ in parts]
    total = sum(weight for _, weight in parts)
    shares = [weight / total for _, weight in parts]
    device = str(cast(Any, pipeline)._execution_device)
    with torch.no_grad():
        if family is Family.SD:
            return _sd_embeddings(pipeline, texts, shares, compel_syntax(negative_prompt), device)
        return _sdxl_embeddings(pipeline, texts, shares, compel_syntax(negative_prompt), device)


def _blended(rows: torch.Tensor, shares: Sequence[float]) -> torch.Tensor:
    """Rows (one per part, same length) averaged by their shares, as one row."""
    return torch.stack([row * share for row, share in zip(rows, shares, strict=True)]).sum(
        dim=0, keepdim=True
    )


def _sd_embeddings(
    pipeline: DiffusionPipeline, texts: list[str], shares: list[float], negative: str, device: str
) -> dict[str, torch.Tensor]:
    pipe = cast(Any, pipeline)
    compel = Compel(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        truncate_long_prompts=False,
        device=device,
    )
    # One call: compel encodes each text on its own and pads them all to one length.
    rows = compel([*texts, negative])
    return {
        "prompt_embeds": _blended(rows[:-1], shares),
        "negative_prompt_embeds": rows[-1:],
    }


def _sdxl_embeddings(
    pipeline: DiffusionPipeline, texts: list[str], shares: list[float], negative: str, device: str
) -> dict[str, torch.Tensor]:
    pipe = cast(Any, pipeline)
    # SDXL's own encoding gives no negative prompt zeros rather than the empty prompt's
    # embedding, where the checkpoint asks for that.
    zeros = not negative and bool(pipe.config.get("force_zeros_for_empty_prompt", False))
    conditioning = CompelForSDXL(pipe, device=device)(
        texts, negative_prompt=None if zeros else [negative]
    )
    embeds = _blended(conditioning.embeds, shares)
    pooled = _blended(conditioning.pooled_embeds, shares)
    if zeros:
        negative_embeds, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        negative_embeds = conditioning.negative_embeds[:1]
        negative_pooled = conditioning.negative_pooled_embeds[:1]
    return {
        "prompt_embeds": embeds,
        "negative_prompt_embeds": negative_embeds,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }
