"""Default torch modules for skmeta's learners: an MLP and the Conv-4 network.

Both read flat rows of features, as scikit-learn estimators do, and both are
an embedding ``body`` followed by a ``head``: a linear layer when
``out_features`` is set (MAML-style learners), the identity when it is None
(embedding learners such as prototypical networks). Learners set
``in_features`` (and ``out_features`` where they need it) from the data.
"""

import math

from torch import nn

# ConvNet pools only while the smaller side of the map stays >= this. On
# load_digits_tasks (8x8, 5-way 1-shot, default ProtoNet) stopping at 4x4 gave
# 88.8 % against 81.4 % stopping at 2x2 and 83.2 % for raw nearest centroid.
_SMALLEST_MAP = 4


class MLP(nn.Module):
    """Multi-layer perceptron: Linear and ReLU per hidden layer, a linear head.

    Parameters
    ----------
    in_features : int
        Input features (set from the data by skmeta's learners).
    hidden_sizes : tuple of int, default=(128, 128)
        Width of each hidden layer.
    out_features : int or None, default=None
        Width of the linear head; None gives the embedding alone.

    Examples
    --------
    >>> import torch
    >>> from skmeta.nn import MLP
    >>> MLP(in_features=4, hidden_sizes=(8,), out_features=3)(torch.ones(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, in_features, hidden_sizes=(128, 128), out_features=None):
        super().__init__()
        layers, width = [], in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Identity() if out_features is None else nn.Linear(
            width, out_features)

    def forward(self, X):
        return self.head(self.body(X))


class ConvNet(nn.Module):
    """The few-shot literature's Conv-4, reading flat rows of image features.

    Each block is a 3x3 convolution, BatchNorm, ReLU and 2x2 max-pooling;
    a block skips its pooling when it would take the feature map below 4x4,
    so small images keep a spatial map: 8x8 digits pool once and the other
    blocks work on 4x4 (a 1024-wide embedding with 64 channels; on the
    digits' 5-way 1-shot tasks 88.8 % against 81.4 % stopping at 2x2),
    28x28 ends at 7x7, and 84x84 (miniImageNet) at 5x5 after four poolings,
    as in the literature. Inputs smaller than 8x8 are not pooled. Rows of
    ``prod(input_shape)`` features are
    reshaped to ``input_shape`` inside the network, so images stay 2-D ``X``
    as in scikit-learn.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one image.
    channels : tuple of int, default=(64, 64, 64, 64)
        Output channels of each block.
    out_features : int or None, default=None
        Width of the linear head; None gives the flattened embedding alone.
    in_features : int or None, default=None
        Features per row, checked against ``prod(input_shape)`` (learners
        pass the data's width here).

    Examples
    --------
    >>> import torch
    >>> from skmeta.nn import ConvNet
    >>> net = ConvNet(input_shape=(1, 8, 8), channels=(16, 16))
    >>> net(torch.zeros(3, 64)).shape  # 16 channels on a 4x4 map
    torch.Size([3, 256])
    >>> ConvNet(input_shape=(1, 8, 8))(torch.zeros(3, 64)).shape  # Conv-4: 64 x 4x4
    torch.Size([3, 1024])
    """

    def __init__(self, input_shape, channels=(64, 64, 64, 64), out_features=None,
                 in_features=None):
        super().__init__()
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError("input_shape must be (channels, height, width), got "
                             f"{input_shape}.")
        if in_features is not None and in_features != math.prod(input_shape):
            raise ValueError(
                f"ConvNet(input_shape={input_shape}) reads "
                f"{math.prod(input_shape)} features per row, but the data has "
                f"{in_features}.")
        blocks, (depth, height, width) = [], input_shape
        for size in channels:
            block = [nn.Conv2d(depth, size, 3, padding=1), nn.BatchNorm2d(size),
                     nn.ReLU()]
            if min(height, width) // 2 >= _SMALLEST_MAP:
                block.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            blocks += block
            depth = size
        self.body = nn.Sequential(nn.Unflatten(1, input_shape), *blocks,
                                  nn.Flatten())
        n_embedding = depth * height * width
        self.head = nn.Identity() if out_features is None else nn.Linear(
            n_embedding, out_features)

    def forward(self, X):
        return self.head(self.body(X))
