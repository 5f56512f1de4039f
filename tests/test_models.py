import pytest
import torch

from spatialssl.models import RelationHead, create_backbone, embed


@pytest.mark.parametrize("name, blocks, features", [
    ("resnet8", 1, 64), ("resnet20", 3, 64), ("resnet32", 5, 64), ("resnet56", 9, 64)])
def test_cifar_resnets(name, blocks, features):
    model = create_backbone(name)
    assert model.num_features == features and len(model.layer1) == blocks and not hasattr(model, "layer4")
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 64, 8, 8)
    assert embed(model, x).shape == (2, 64)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_imagenet_resnets_load_into_torchvision_unchanged(name, torchvision):
    ours = create_backbone(name, num_classes=1000).eval()
    theirs = getattr(torchvision.models, name)().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same keys and shapes
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # and back


@pytest.mark.parametrize("cifar_stem, size, spatial", [(False, 96, 3), (True, 32, 4)])
def test_resnet18_stems(cifar_stem, size, spatial):
    model = create_backbone("resnet18", cifar_stem=cifar_stem)
    assert model.forward_features(torch.randn(1, 3, size, size)).shape == (1, 512, spatial, spatial)
    assert embed(model, torch.randn(2, 3, size, size)).shape == (2, 512)


@pytest.mark.parametrize("outputs", [1, 3])
def test_relation_head_shapes(outputs):
    head = RelationHead(64, outputs)
    assert head(torch.randn(10, 64), torch.randn(10, 64)).shape == (10, outputs)
    assert head.net[0].in_features == 128 and head.net[0].out_features == 256
    assert isinstance(head.net[1], torch.nn.BatchNorm1d) and isinstance(head.net[2], torch.nn.LeakyReLU)


def test_adamw_keeps_what_the_model_names_and_1d_parameters_out_of_weight_decay():
    from spatialssl.engine.config import load_config
    from spatialssl.engine.optim import build_optimizer
    from spatialssl.methods import Supervised

    backbone = create_backbone("vit_tiny", num_classes=10, pos_embed=True, class_token=True, depth=1)
    assert backbone.no_weight_decay() == {"pos_embed", "cls_token"}
    assert create_backbone("vit_tiny", depth=1).no_weight_decay() == set()  # PART's: neither exists
    assert create_backbone("resnet8").no_weight_decay() == set()
    method = Supervised.from_config(load_config(), backbone, (0.5,) * 3, (0.2,) * 3, 10)
    decayed, kept_out = build_optimizer(load_config(overrides=["optim.name=adamw", "optim.weight_decay=0.05"]).optim,
                                        method).param_groups
    names = {id(p): n for n, p in method.named_parameters()}
    assert decayed["weight_decay"] == 0.05 and kept_out["weight_decay"] == 0.0
    assert {names[id(p)] for p in kept_out["params"]} >= {"backbone.pos_embed", "backbone.cls_token",
                                                          "backbone.norm.weight", "backbone.head.bias"}
    assert all(p.dim() > 1 for p in decayed["params"]) and "backbone.head.weight" in {names[id(p)] for p in decayed["params"]}


def test_a_position_embedding_of_another_grid_is_resampled_not_dropped(tmp_path):
    from safetensors.torch import save_file

    from spatialssl.engine.build import load_pretrained
    from spatialssl.models.vit import resize_position_embedding

    ramp = torch.arange(4.0).repeat(4)  # 4 x 4 grid whose embedding is the column index in every channel
    position = torch.cat([torch.full((1, 1, 8), 7.0), ramp.view(1, 16, 1).expand(1, 16, 8)], dim=1)
    resized = resize_position_embedding(position, 1, 1, 64)
    assert resized.shape == (1, 65, 8) and torch.equal(resized[0, 0], torch.full((8,), 7.0))  # [CLS] slot kept
    columns = resized[0, 1:, 0].view(8, 8)
    assert torch.allclose(columns, columns[:1].expand(8, 8))  # still constant down each column
    assert (columns[0, 1:] >= columns[0, :-1]).all() and columns[0, -1] > columns[0, 0] + 2  # still a ramp
    assert resize_position_embedding(position, 1, 0, 64).shape == (1, 64, 8)  # no [CLS] slot wanted
    assert resize_position_embedding(position[:, :13], 1, 1, 64) is None  # 12 tokens: no square grid

    small = create_backbone("vit_tiny", input_size=(16, 16), patch_size=4, pos_embed=True, class_token=True)
    save_file(small.state_dict(), str(tmp_path / "small.safetensors"))
    large = create_backbone("vit_tiny", input_size=(32, 32), patch_size=4, pos_embed=True, class_token=True)
    load_pretrained(large, tmp_path / "small.safetensors")
    expected = resize_position_embedding(small.pos_embed.detach(), 1, 1, 64)
    assert torch.allclose(large.pos_embed.detach(), expected)


def test_layer_decay_scales_each_blocks_learning_rate_by_its_depth():
    from spatialssl.engine.config import load_config
    from spatialssl.engine.optim import build_optimizer, set_learning_rate
    from spatialssl.errors import ConfigError
    from spatialssl.methods import Supervised

    backbone = create_backbone("vit_tiny", num_classes=10, pos_embed=True, class_token=True, depth=3)
    method = Supervised.from_config(load_config(), backbone, (0.5,) * 3, (0.2,) * 3, 10)
    optim = load_config(overrides=["optim.name=adamw", "optim.weight_decay=0.05", "optim.layer_decay=0.5"]).optim
    optimizer = build_optimizer(optim, method)
    set_learning_rate(optimizer, optim, 10 ** 6, 10 ** 7, 10)  # a constant schedule: lr = optim.lr
    names = {id(p): n for n, p in method.named_parameters()}
    rate = {names[id(p)]: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups
            for p in group["params"]}
    assert rate["backbone.patch_embed.proj.weight"] == (optim.lr * 0.5 ** 4, 0.05)
    assert rate["backbone.cls_token"] == (optim.lr * 0.5 ** 4, 0.0)  # decayed by depth, kept out of weight decay
    assert rate["backbone.blocks.0.attn.qkv.weight"] == (optim.lr * 0.5 ** 3, 0.05)
    assert rate["backbone.blocks.2.norm1.bias"] == (optim.lr * 0.5, 0.0)
    assert rate["backbone.head.weight"] == (optim.lr, 0.05) and rate["backbone.norm.weight"] == (optim.lr, 0.0)
    assert len(rate) == len(list(method.parameters()))
    plain = build_optimizer(load_config(overrides=["optim.name=adamw"]).optim, method)
    assert len(plain.param_groups) == 2  # off: the two weight-decay groups, as ever
    resnet = Supervised.from_config(load_config(), create_backbone("resnet8", num_classes=10), (0.5,) * 3,
                                    (0.2,) * 3, 10)
    with pytest.raises(ConfigError, match="layer_decay needs a ViT"):
        build_optimizer(optim, resnet)


def test_layer_decay_gives_what_a_method_places_in_a_block_that_blocks_rate():
    from spatialssl.engine.optim import layer_scales
    from spatialssl.methods.detection import Detection

    class WithPositions(torch.nn.Module):  # detection's relative position biases: held outside the backbone
        layer_of = Detection.layer_of

        def __init__(self):
            super().__init__()
            self.backbone = create_backbone("vit_tiny", depth=2)
            self.pyramid = torch.nn.Module()
            self.pyramid.positions = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(3)) for _ in range(2)])

    model = WithPositions()
    scales = layer_scales(model, [n for n, _ in model.named_parameters()], 0.5)
    assert scales["pyramid.positions.0"] == scales["backbone.blocks.0.norm1.weight"] == 0.5 ** 2
    assert scales["pyramid.positions.1"] == 0.5
