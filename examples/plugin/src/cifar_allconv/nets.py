"""All-convolutional net (Springenberg et al., 2015): strided convolutions replace pooling."""

from torch import nn


def build_allconv(num_classes: int = 10, width: int = 32) -> nn.Module:
    """All-convolutional net: 3x3 convs, stride-2 convs instead of pooling, global average head."""

    def conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *conv(3, width),
        *conv(width, width, stride=2),
        *conv(width, 2 * width),
        *conv(2 * width, 2 * width, stride=2),
        nn.Conv2d(2 * width, num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
