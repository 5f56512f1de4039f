"""Random token masks (MAE, MP3): per image, a uniformly random subset of the grid's tokens stays
visible, drawn as MAE does (sorting uniform noise), so every image gets its own mask."""
from __future__ import annotations

import torch


def visible_count(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left visible: int(N * (1 - mask_ratio)), MAE's count; refused when none would be."""
    if not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    visible = int(num_tokens * (1 - mask_ratio))
    if visible < 1:
        raise ValueError(f"mask_ratio {mask_ratio} leaves none of the {num_tokens} tokens visible")
    return visible


def random_masking(batch: int, num_tokens: int, mask_ratio: float, generator: torch.Generator, device) -> tuple:
    """(visible token indices B x K, ascending; masked B x N bool): exactly N - K of each image's tokens
    masked, K = ``visible_count``, a different uniformly random set per image."""
    visible = visible_count(num_tokens, mask_ratio)
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    kept = noise.argsort(dim=1)[:, :visible].sort(dim=1).values
    masked = torch.ones(batch, num_tokens, dtype=torch.bool, device=device).scatter(1, kept, False)
    return kept, masked
