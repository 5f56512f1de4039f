"""PART for multichannel signals in your own loop: windows placed anywhere in an epoch, a 1-D ViT, the
relative encoder regressing each pair's time shift (in units of the reference window).

    python examples/part1d_in_your_loop.py --data recordings.npz --steps 200

``--data``: an .npz with ``signals`` (N x C x T float) [+ ``labels``, ``subjects``, ``sampling_rate``], or a
folder of WFDB / EDF recordings (``pip install 'spatialssl[signals]'``).
"""
import argparse

import torch
from safetensors.torch import save_file

from spatialssl import CrossAttentionEncoder, RelativePositionLoss, WindowSampler, load_signals, relative_targets, sample_pairs
from spatialssl.data.signals import SignalOptions
from spatialssl.models import create_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--window", type=int, default=25, help="samples per window (token)")
    parser.add_argument("--windows", type=int, default=24, help="windows per epoch")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--out", default="part1d_vit.safetensors")
    args = parser.parse_args()

    # As stored: no resampling or band-pass here (SignalOptions() would filter and resample to 100 Hz).
    epochs = load_signals(args.data, "train", SignalOptions(sampling_rate=None, bandpass=None)).signals
    channels, length = epochs.shape[1:]
    windows_of = WindowSampler("offgrid", args.window, args.windows)
    vit = create_backbone("vit1d_tiny", input_size=[length], patch_size=args.window, in_chans=channels,
                          depth=args.depth)
    encoder = CrossAttentionEncoder(vit.num_features, outputs=1)  # the time shift of each pair
    loss_fn = RelativePositionLoss()
    optimizer = torch.optim.AdamW([*vit.parameters(), *encoder.parameters()], lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)

    for step in range(args.steps):
        batch = epochs[torch.randint(len(epochs), (args.batch,), generator=generator)]
        windows, spans = windows_of(batch, generator)  # B x N x C x W and their (t0, length)
        pairs = sample_pairs(args.batch, args.windows, args.pairs, generator, "cpu")
        loss, _ = loss_fn(encoder(vit.patch_tokens(windows), pairs), relative_targets(spans, pairs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step + 1}: loss {loss.item():.4f}")
    save_file(vit.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
