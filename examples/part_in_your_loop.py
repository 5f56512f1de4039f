"""PART in your own training loop: off-grid patches into a ViT without position embedding, a
cross-attention relative encoder regressing every sampled pair's translation.

    python examples/part_in_your_loop.py --data ~/data/cifar10 --steps 200
"""
import argparse

import torch
from safetensors.torch import save_file

from spatialssl import BoxSampler, CrossAttentionEncoder, RelativePositionLoss, load_images, relative_targets, sample_pairs
from spatialssl.models import create_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4, help="token size P; (S / P)^2 patches per image")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--out", default="part_vit.safetensors")
    args = parser.parse_args()

    images = load_images(args.data, image_size=args.image_size).images
    tokens = (args.image_size // args.patch) ** 2
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    boxes_of = BoxSampler("offgrid", args.patch, tokens, mean, std)  # P x P boxes anywhere, the paper's sampling
    vit = create_backbone("vit_tiny", patch_size=args.patch, depth=args.depth)  # no position embedding
    encoder = CrossAttentionEncoder(vit.num_features, outputs=2)  # dx, dy of each (reference, target) pair
    loss_fn = RelativePositionLoss()
    optimizer = torch.optim.AdamW([*vit.parameters(), *encoder.parameters()], lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)

    for step in range(args.steps):
        batch = images[torch.randint(len(images), (args.batch,), generator=generator)]
        patches, boxes = boxes_of(batch, generator)  # B x N x 3 x P x P and their boxes (x0, y0, w, h)
        pairs = sample_pairs(args.batch, tokens, args.pairs, generator, "cpu")  # B x M x (reference, target)
        predicted = encoder(vit.patch_tokens(patches), pairs)
        loss, _ = loss_fn(predicted, relative_targets(boxes, pairs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step + 1}: loss {loss.item():.4f}")
    save_file(vit.state_dict(), args.out)  # timm's VisionTransformer keys (pos_embed='none')
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
