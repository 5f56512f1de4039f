"""PART for signals: windows (1-D boxes) placed anywhere in an epoch, unequally spaced,
cut for the whole batch by one grid_sample. A window is (t0, length) in samples; windows
are B x N x 2, and ``relative_targets`` gives (t_tgt - t_ref) / len_ref on their centres."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import augment

MODES = ("offgrid", "scale", "grid")


def check_window_geometry(mode: str, length: int, window: int, num_tokens: int,
                          window_scale: Sequence[float] = (0.5, 2.0)) -> None:
    if mode not in MODES:
        raise ValueError(f"mode '{mode}' is not available for signals; choose one of {', '.join(MODES)}")
    if window > length:
        raise ValueError(f"window {window} exceeds the {length} samples of an epoch")
    if mode == "grid" and num_tokens > length // window:
        raise ValueError(f"num_tokens {num_tokens} exceeds the {length // window} grid windows of an epoch")
    if mode == "scale" and window_scale[1] * window > length:
        raise ValueError(f"window_scale max {window_scale[1]} x window {window} exceeds the {length}-sample epoch")
    if num_tokens < 2:
        raise ValueError(f"num_tokens must be >= 2 (pairs need two windows), got {num_tokens}")


def sample_windows(batch: int, num_tokens: int, length: int, mode: str, window: int, generator: torch.Generator,
                   device, window_scale: Sequence[float] = (0.5, 2.0), sort: bool = False) -> torch.Tensor:
    """B x N x 2 windows: offgrid = uniform integer starts, fixed length; scale = lengths
    uniform in ``window_scale`` x window, continuous starts; grid = evenly spaced tiles (a
    random subset of them if N is fewer), in a random order. ``sort`` orders each image's windows by start."""
    shape = (batch, num_tokens)
    if mode == "offgrid":
        start = (torch.rand(shape, generator=generator, device=device) * (length - window + 1)).floor()
        size = torch.full(shape, float(window), device=device)
    elif mode == "scale":
        lo, hi = window_scale[0] * window, window_scale[1] * window
        size = lo + torch.rand(shape, generator=generator, device=device) * (hi - lo)
        start = torch.rand(shape, generator=generator, device=device) * (length - size)
    elif mode == "grid":
        tiles = torch.arange(0, length - window + 1, window, device=device).float()
        chosen = torch.rand(batch, len(tiles), generator=generator, device=device).argsort(1)[:, :num_tokens]
        start = tiles[chosen]  # in a random order (``sort`` orders them): a slot must not tell its place
        size = torch.full(shape, float(window), device=device)
    else:
        raise ValueError(f"mode '{mode}' is not available for signals; choose one of {', '.join(MODES)}")
    windows = torch.stack([start, size], dim=-1)
    if sort:
        windows = windows.gather(1, windows[..., :1].argsort(1).expand(-1, -1, 2))
    return windows


def cut_windows(signals: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """Each window's samples resampled to ``size`` (linear), B x N x C x size, by one
    grid_sample; integer windows of ``size`` samples (offgrid, grid) are gathered exactly.
    Both cuts are made and chosen per window: asking which applies would make the host wait."""
    start, span = windows.unbind(-1)
    exact = (span == size) & (start == start.floor())
    return torch.where(exact[..., None, None], _gather_windows(signals, start, size),
                       _resample_windows(signals, windows, size))


def _gather_windows(signals: torch.Tensor, start: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` samples from each (integer) start: B x N x C x size (clamped to the signal for the others)."""
    batch, channels, length = signals.shape
    num = start.shape[1]
    index = (start.long()[..., None] + torch.arange(size, device=signals.device)).clamp(0, length - 1)
    cut = signals.gather(2, index.view(batch, 1, num * size).expand(-1, channels, -1))
    return cut.view(batch, channels, num, size).transpose(1, 2)


def _resample_windows(signals: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """Each window's samples at ``size`` evenly spaced points (linear interpolation): B x N x C x size."""
    batch, channels, length = signals.shape
    num = windows.shape[1]
    steps = (torch.arange(size, device=signals.device, dtype=signals.dtype) + 0.5) / size
    t = windows[..., :1].to(signals.dtype) + steps * windows[..., 1:].to(signals.dtype)  # B x N x size
    grid = torch.stack([2 * t / length - 1, torch.zeros_like(t)], dim=-1).view(batch, 1, num * size, 2)
    out = F.grid_sample(signals[:, :, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(batch, channels, num, size).transpose(1, 2)


@dataclass
class WindowSampler:
    """float epochs B x C x T -> (windows B x N x C x W, their (t0, length) B x N x 2)."""
    mode: str
    window: int
    num_tokens: int
    window_scale: Sequence[float] = (0.5, 2.0)
    sort: bool = False  # order windows by time (needed when a position embedding sees them)

    def __call__(self, signals: torch.Tensor, generator: torch.Generator) -> tuple:
        with augment.without_autocast(signals):
            windows = sample_windows(len(signals), self.num_tokens, signals.shape[-1], self.mode, self.window,
                                     generator, signals.device, self.window_scale, self.sort)
            return cut_windows(signals, windows, self.window), windows
