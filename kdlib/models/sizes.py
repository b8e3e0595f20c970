"""Size bounds of the model zoo: every constructor checks its sizes here before allocating.

The bounds are far above anything the paper or this library trains, and low enough that a
mistyped size fails at once with a message instead of hanging or exhausting memory:

    num_classes      2 .. 100,000        (ImageNet-21k has 21,841 classes)
    in_channels      1 .. 1,024          (images have 1 or 3; multispectral a few dozen)
    ResNet depth     8 .. 1,202, (depth - 2) % 6 == 0   (1202: the deepest CIFAR ResNet of
                                                         He et al. 2016)
    WRN depth        10 .. 1,000, (depth - 4) % 6 == 0
    WRN width        1 .. 32                             (the WRN paper's widest is 12)
    conv channels    1 .. 4,096; MLP widths and in_features 1 .. 1,000,000; <= 100 hidden
    MobileNetV2      expansion 1 .. 16, width_mult 1/16 .. 4
    parameters       <= 500,000,000 in total (2 GB of float32 weights before gradients and
                     optimizer state; resnet1202x4, the largest name that passes, has 310 M)

Each check raises TypeError for a wrong type and ValueError naming the parameter and the
allowed range.
"""

from __future__ import annotations

from itertools import islice

from .._validate import check_int, check_real

MAX_NUM_CLASSES = 100_000
MAX_IN_CHANNELS = 1_024
RESNET_MIN_DEPTH, RESNET_MAX_DEPTH = 8, 1_202
WRN_MIN_DEPTH, WRN_MAX_DEPTH = 10, 1_000
WRN_MAX_WIDTH = 32
MAX_CONV_CHANNELS = 4_096
MAX_FEATURES = 1_000_000
MAX_HIDDEN_LAYERS = 100
MAX_EXPANSION = 16
WIDTH_MULT_RANGE = (1 / 16, 4.0)
MAX_PARAMETERS = 500_000_000


def check_num_classes(value) -> int:
    return check_int(value, "num_classes", minimum=2, maximum=MAX_NUM_CLASSES)


def check_in_channels(value) -> int:
    return check_int(value, "in_channels", minimum=1, maximum=MAX_IN_CHANNELS)


def check_resnet_depth(value, name: str = "depth") -> int:
    """A CIFAR ResNet depth: 8 <= depth <= 1202 with (depth - 2) % 6 == 0."""
    depth = check_int(value, name, minimum=RESNET_MIN_DEPTH, maximum=RESNET_MAX_DEPTH)
    if (depth - 2) % 6 != 0:
        raise ValueError(
            f"{name} must satisfy (depth - 2) % 6 == 0 (8, 14, 20, 32, 44, 56, 110, ...), "
            f"got {depth}"
        )
    return depth


def check_wrn_depth(value, name: str = "depth") -> int:
    """A Wide ResNet depth: 10 <= depth <= 1000 with (depth - 4) % 6 == 0."""
    depth = check_int(value, name, minimum=WRN_MIN_DEPTH, maximum=WRN_MAX_DEPTH)
    if (depth - 4) % 6 != 0:
        raise ValueError(
            f"{name} must satisfy (depth - 4) % 6 == 0 (10, 16, 22, 28, 40, ...), got {depth}"
        )
    return depth


def check_wrn_width(value, name: str = "width") -> int:
    return check_int(value, name, minimum=1, maximum=WRN_MAX_WIDTH)


def check_widths(values, name: str, maximum: int, max_len: int | None = None) -> tuple[int, ...]:
    """A sequence of ints in [1, maximum] (at most max_len of them), as a tuple."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints >= 1, got {values!r}")
    # islice: a huge (or endless) iterable is refused after max_len + 1 items
    values = tuple(values if max_len is None else islice(values, max_len + 1))
    if max_len is not None and len(values) > max_len:
        raise ValueError(f"{name} may hold at most {max_len} entries, got more")
    return tuple(
        check_int(v, f"{name}[{i}]", minimum=1, maximum=maximum) for i, v in enumerate(values)
    )


def check_expansion(value) -> int:
    return check_int(value, "expansion", minimum=1, maximum=MAX_EXPANSION)


def check_width_mult(value) -> float:
    return check_real(value, "width_mult", *WIDTH_MULT_RANGE)


def check_parameter_budget(n_parameters: int, model: str) -> None:
    """Refuse a model whose parameter count (computed before allocating) exceeds the cap."""
    if n_parameters > MAX_PARAMETERS:
        raise ValueError(
            f"{model} would have {n_parameters:,} parameters, more than the allowed "
            f"{MAX_PARAMETERS:,} (2 GB of float32 weights); use a smaller depth, width, "
            "num_classes or in_channels"
        )
