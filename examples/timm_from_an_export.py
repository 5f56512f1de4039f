"""Use a spatialssl-pretrained ViT in timm: features for your own downstream code, or a new head to finetune.

    spatialssl export --checkpoint runs/part/last.ckpt --out exported --format timm
    python examples/timm_from_an_export.py exported --classes 10
"""
import argparse

import timm
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="what `spatialssl export --format timm` wrote")
    parser.add_argument("--classes", type=int, default=0, help="a fresh classifier head of this many classes")
    args = parser.parse_args()

    model = timm.create_model(f"local-dir:{args.folder}", pretrained=True).eval()  # config.json + model.safetensors
    config = model.pretrained_cfg
    size = config["input_size"][-1]
    images = torch.rand(2, 3, size, size)  # stands in for your images, normalised with config["mean"], config["std"]
    with torch.no_grad():
        features = model.forward_head(model.forward_features(images), pre_logits=True)
    print(f"{config.get('architecture', 'model')}: features {tuple(features.shape)} for {size}x{size} images, "
          f"normalised with mean {config['mean']} and std {config['std']}")
    if args.classes:
        model.reset_classifier(args.classes)  # then finetune it with timm's or your own training script
        print(f"new head: {model.get_classifier()}")


if __name__ == "__main__":
    main()
