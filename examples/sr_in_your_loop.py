"""Spatial Reasoning in your own training loop: our sampler, head and loss, your optimiser.

    python examples/sr_in_your_loop.py --data ~/data/cifar10 --steps 200

``--data`` is anything spatialssl reads (CIFAR folders, class folders, a flat folder of images, an .npz).
"""
import argparse

import torch
from safetensors.torch import save_file

from spatialssl import (PatchSampler, RelationHead, SpatialRelationLoss, ViewSampler, embed, load_images,
                        patch_pairs, relation_pairs, resnet32, spatial_targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", default="sr_backbone.safetensors")
    args = parser.parse_args()

    images = load_images(args.data, image_size=args.image_size).images  # uint8 N x 3 x H x W, decoded once
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    views = ViewSampler(4, mean, std)  # K = 4 augmentations per image
    patches = PatchSampler(2, args.image_size // 2, mean, std)  # N = 2 patches per image, never overlapping
    backbone = resnet32()
    head = RelationHead(backbone.num_features, outputs=3)  # same image? and the patches' dx, dy
    loss_fn = SpatialRelationLoss()
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    for step in range(args.steps):
        batch = images[torch.randint(len(images), (args.batch,), generator=generator)]
        x_views = views(batch, generator)  # K * B views, augmentation-major
        x_patches, centres = patches(batch, generator)  # N * B patches and their (x, y) centres
        z = embed(backbone, torch.cat([x_views, x_patches]))
        z_views, z_patches = z[:len(x_views)], z[len(x_views):]
        left, right, same = relation_pairs(args.batch, views.num_views, "cpu")
        patch_left, patch_right = patch_pairs(args.batch, patches.num_patches, "cpu")
        outputs = head(torch.cat([z_views[left], z_patches[patch_left]]),
                       torch.cat([z_views[right], z_patches[patch_right]]))
        loss, parts = loss_fn(outputs, spatial_targets(same, centres.reshape(-1, 2), patch_left, patch_right))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step + 1}: loss {loss.item():.4f} ({', '.join(f'{k} {v.item():.3f}' for k, v in parts.items())})")
    save_file(backbone.state_dict(), args.out)  # safetensors: loading it runs no code
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
