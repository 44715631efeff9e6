import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_cifar import registry
from lightning_cifar.errors import BackboneConfigError
from lightning_cifar.models import MLP, ConvPoolNet
from lightning_cifar.models.measure import count_parameters

# Every backbone this package registers, as the registry lists them: a new preset is tested without a word here.
BUILTINS = [name for name, claims in registry.entries().items() if claims[0].builtin]


def test_the_builtins_are_the_two_families_and_their_presets():
    assert {"convpool", "mlp_net", "cnn_base", "cnn_wide", "cnn_deep", "mlp_seed"} <= set(BUILTINS)
    assert all(name.startswith(("cnn_", "mlp", "convpool")) for name in BUILTINS), BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("num_classes", [10, 7])
def test_every_builtin_maps_images_to_logits(name, num_classes):
    # check=True: the output probe a plugin gets at every build, which the built-ins get here instead.
    net = registry.create_backbone(name, num_classes=num_classes, check=True)
    out = net(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, num_classes)
    assert torch.isfinite(out).all()


def test_builtins_are_declared_once_in_code_not_in_package_metadata():
    from importlib.metadata import entry_points

    ours = [ep for ep in entry_points(group=registry.GROUP) if ep.dist is not None and ep.dist.name == "lightning-cifar"]
    assert ours == []  # no second declaration in pyproject.toml
    for name in BUILTINS:
        entry = registry.get_backbone_entry(name)
        assert entry.distribution.startswith("lightning-cifar ") and entry.distribution.endswith("(built in)")
        module, attr = entry.target.split(":")
        assert getattr(__import__(module, fromlist=[attr]), attr) is entry.load()  # the name an entry point would use


def conv_layers(net):
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_presets_have_falling_kernels_and_the_promised_shape():
    base, wide, deep = (registry.create_backbone(n) for n in ("cnn_base", "cnn_wide", "cnn_deep"))
    assert [c.kernel_size[0] for c in conv_layers(base)] == [7, 5, 3]
    assert [c.out_channels for c in conv_layers(wide)] == [2 * c.out_channels for c in conv_layers(base)]
    assert len(conv_layers(deep)) == 2 * len(conv_layers(base))
    assert {c.out_channels for c in conv_layers(deep)} == {c.out_channels for c in conv_layers(base)}


def test_seed_cnn_matches_the_notebooks_keras_model():
    net = registry.create_backbone("cnn_seed")
    convs = conv_layers(net)
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    # Keras summary in the notebook: 448 and 4640 parameters for the first two convolutions.
    assert [sum(p.numel() for p in c.parameters()) for c in convs[:2]] == [448, 4640]
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25, 0.5]
    dense = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(8 * 8 * 128, 512), (512, 10)]


def test_seed_mlp_has_the_notebooks_parameter_count():
    # "Total params: 404010" in the notebook's Keras summary.
    assert count_parameters(registry.create_backbone("mlp_seed")) == 404_010


def test_rising_kernels_are_rejected():
    with pytest.raises(BackboneConfigError, match=r"must not increase.*\[3, 5\]"):
        ConvPoolNet(widths=[16, 32], kernels=[3, 5])
    with pytest.raises(BackboneConfigError, match="must not increase"):
        registry.create_backbone("cnn_base", kernels=[3, 5, 7])


def test_equal_kernels_are_allowed():
    assert ConvPoolNet(widths=[8, 8, 8], kernels=[3, 3, 3])(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernels": [4, 3, 3]}, "positive odd"),
        ({"widths": []}, "widths is empty"),
        ({"widths": [16, 0, 32]}, "width 0"),
        ({"widths": [16, -8, 32]}, "width -8"),
        ({"widths": [16, 32], "kernels": [5, 3, 3]}, "kernels has 3 entries"),
        ({"blocks": 6, "kernels": [3]}, "block 6"),
        ({"dropout": 1.0}, "dropout"),
        ({"pool": "median"}, "pool='median'"),
        ({"activation": "swishy"}, "activation='swishy'"),
    ],
)
def test_bad_convpool_parameters_name_the_problem(kwargs, message):
    with pytest.raises(BackboneConfigError, match=message):
        ConvPoolNet(**{"widths": [16, 32, 64], "kernels": [5, 3, 3], **kwargs})


def test_width_mult_scales_every_block():
    half = ConvPoolNet(widths=[32, 64, 128], kernels=[7, 5, 3], width_mult=0.5)
    assert [c.out_channels for c in conv_layers(half)] == [16, 32, 64]


def test_blocks_cuts_or_extends_the_stack():
    two = ConvPoolNet(widths=[32, 64, 128], kernels=[7, 5, 3], blocks=2)
    five = ConvPoolNet(widths=[32, 64, 128], kernels=[7, 5, 3], blocks=5)
    assert [c.out_channels for c in conv_layers(two)] == [32, 64]
    assert [(c.out_channels, c.kernel_size[0]) for c in conv_layers(five)] == [
        (32, 7), (64, 5), (128, 3), (256, 3), (512, 3)
    ]
    assert five(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_mlp_options():
    net = MLP(hidden=[64, 32], norm="layer", dropout=0.1, activation="gelu")
    kinds = [type(m).__name__ for m in net.net]
    assert kinds == ["Flatten", "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU",
                     "Dropout", "Linear"]
    assert MLP(hidden=[])(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


BLOCK = ["Conv2d", "BatchNorm2d", "ReLU"]


@pytest.mark.parametrize("position, layers", [
    # after the first convolution's activation
    ("first", [*BLOCK, "MaxPool2d", *BLOCK, *BLOCK, "MaxPool2d", *BLOCK]),
    # right after the first convolution, before its batch norm (airbench's order)
    ("first_conv", ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", *BLOCK,
                    "Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", *BLOCK]),
])
def test_pool_position_puts_each_blocks_pooling_in_its_place(position, layers):
    net = ConvPoolNet(widths=[[8, 8], [16, 16]], kernels=[5, 3], pool_position=position)
    assert [type(m).__name__ for m in net.features] == layers
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_pooling_before_the_norm_computes_what_pooling_after_it_does_in_evaluation():
    # Batch norm's scale frozen at 1 keeps it increasing, and ReLU is: max pooling commutes with both, so only
    # the statistics (over the pooled pixels) tell the two orders apart. In evaluation mode they agree exactly.
    torch.manual_seed(0)
    before = ConvPoolNet(widths=[8, 16], kernels=[3, 3], pool_position="first_conv", norm_scale=False).eval()
    after = ConvPoolNet(widths=[8, 16], kernels=[3, 3], pool_position="first", norm_scale=False).eval()
    # The same layers at other places in the Sequential: copied in order, not by name.
    after.load_state_dict(dict(zip(after.state_dict(), before.state_dict().values())))
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(before(x), after(x), atol=1e-5)


def test_an_unknown_pool_position_is_refused_naming_the_allowed_ones():
    with pytest.raises(BackboneConfigError, match="pool_position='middle'.*'last', 'first', 'first_conv'"):
        ConvPoolNet(pool_position="middle")


# -- the speedruns' options: frozen whitening, dirac init, batch-norm settings ------------------------------


def test_the_whitening_layer_decorrelates_the_patches_it_was_set_from():
    from lightning_cifar.models.whitening import PatchWhitening

    torch.manual_seed(0)
    mix = torch.randn(3, 3)  # correlated colour channels
    images = torch.einsum("ij,njhw->nihw", mix, torch.randn(200, 3, 16, 16))
    layer = PatchWhitening(3, 3, eps=1e-6)
    layer.initialise(images)
    out = F.conv2d(images, layer.weight[: layer.out_channels // 2])  # no padding: whole patches only
    flat = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(27), atol=0.02)
    assert not layer.weight.requires_grad and bool(layer.initialised)


def test_whitening_can_keep_whole_patches_only_and_its_directions_of_largest_variance():
    from lightning_cifar.models.whitening import PatchWhitening

    torch.manual_seed(0)
    images = torch.randn(100, 3, 16, 16).cumsum(-1)  # neighbouring pixels correlate: unequal variances
    full, kept = PatchWhitening(3, 3), PatchWhitening(3, 3, padding="valid", directions=5)
    full.initialise(images), kept.initialise(images)
    assert kept.out_channels == 10 and kept(images).shape == (100, 10, 14, 14)
    # The same filters as the full layer's five of largest variance (its last five: ascending eigenvalues).
    torch.testing.assert_close(kept.weight[:5], full.weight[22:27])
    torch.testing.assert_close(kept.weight[5:], -full.weight[22:27])
    net = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], whiten=3, whiten_padding="valid",
                          whiten_directions=5, head="flatten")
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)  # 30 -> 15 -> 7: the flatten head is sized for it
    assert net.head[-1].in_features == 16 * 7 * 7


@pytest.mark.parametrize("kwargs, message", [
    ({"whiten": 3, "whiten_directions": 28}, r"whiten_directions=28: a 3x3 patch of 3 channels has 27 directions;"
                                             r" allowed 1 to 27, or null for all"),
    ({"whiten": 3, "whiten_padding": "full"}, r"whiten_padding='full': allowed values are 'same', 'valid'"),
    ({"whiten_directions": 12}, r"whiten_directions=12: these set the whitening layer; add one with whiten=3"),
])
def test_bad_whitening_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(BackboneConfigError, match=message):
        registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], **kwargs)


def test_whitening_counts_as_a_block_for_the_kernel_rule():
    with pytest.raises(BackboneConfigError, match=r"whitening layer counts as one: whiten=3 < block 1's 5"):
        registry.create_backbone("convpool", widths=[8, 16], kernels=[5, 3], whiten=3)
    registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], whiten=3)


def test_dirac_starts_each_convolution_as_the_identity_and_norm_scale_can_be_frozen():
    net = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], dirac=True, norm_scale=False, norm_momentum=0.4)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(F.conv2d(x, convs[0].weight[:3], padding=1), x)  # its first 3 filters pass the input on
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not n.weight.requires_grad and n.bias.requires_grad and n.momentum == 0.4 for n in norms)


def test_head_scale_multiplies_the_logits_and_must_be_positive():
    torch.manual_seed(0)
    plain = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3])
    scaled = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], head_scale=1 / 9)
    scaled.load_state_dict(plain.state_dict())  # the factor is not a weight: checkpoints stay interchangeable
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), scaled.eval()
    torch.testing.assert_close(scaled(x), plain(x) / 9)
    with pytest.raises(BackboneConfigError, match=r"head_scale=0: must be > 0"):
        registry.create_backbone("convpool", widths=[8], kernels=[3], head_scale=0)


def test_without_head_bias_the_classifier_has_no_bias_for_bias_lr_to_train():
    from lightning_cifar import Classifier

    net = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], head_bias=False)
    assert net.head[-1].bias is None and net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model = Classifier(backbone="convpool", backbone_kwargs={"widths": [8, 16], "kernels": [3, 3], "head_bias": False},
                       optimizer="muon", lr=0.1, bias_lr=2.0, scheduler="none")
    fast = {id(p) for g in model.configure_optimizers().param_groups if g["lr"] == 2.0 for p in g["params"]}
    assert not any(n.startswith("backbone.head") for n, p in model.named_parameters() if id(p) in fast)
    assert any(n.startswith("backbone.head") for n, p in model.named_parameters())  # its weight trains at lr


def test_the_global_max_head_reads_each_filters_largest_response():
    torch.manual_seed(0)
    avg = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3])
    top = registry.create_backbone("convpool", widths=[8, 16], kernels=[3, 3], head="global_max")
    top.load_state_dict(avg.state_dict())  # no weights of its own: checkpoints stay interchangeable
    avg.eval(), top.eval()
    x = torch.randn(4, 3, 32, 32)
    maps = top.features(x)
    torch.testing.assert_close(top(x), top.head[-1](maps.amax(dim=(2, 3))))
    assert not torch.allclose(top(x), avg(x))


def test_fit_sets_the_whitening_layer_once_and_a_resumed_run_keeps_it(tmp_path, tiny_cifar, cli):
    from tests.helpers.runs import TINY_DATA_ARGS

    net = ["--model.backbone=convpool", '--model.backbone_kwargs={"widths": [8, 16], "kernels": [3, 3], "whiten": 3}']
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *net, "--trainer.precision=32-true"]
    cli(["fit", *data, "--trainer.max_epochs=1"], tmp_path)
    key = "backbone.features.0.weight"
    first = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert bool(first["backbone.features.0.initialised"]) and first[key].abs().sum() > 0
    cli(["fit", *data, "--trainer.max_epochs=2", "--ckpt_path=last", "--data.seed=7"], tmp_path)  # other images
    second = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(first[key], second[key])  # frozen, and not set again from the new split
