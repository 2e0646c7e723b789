import re

import pytest
import torch

from skmeta.nn import MLP, ConvNet


def test_mlp_is_body_and_optional_head():
    embedding = MLP(in_features=5, hidden_sizes=(7, 3))
    assert embedding(torch.ones(2, 5)).shape == (2, 3)
    assert isinstance(embedding.head, torch.nn.Identity)
    assert MLP(5, (7,), out_features=4)(torch.ones(2, 5)).shape == (2, 4)


def test_conv4_stops_pooling_at_one_by_one():
    net = ConvNet(input_shape=(1, 8, 8))
    pools = [m for m in net.body if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more pooling
    assert net(torch.zeros(4, 64)).shape == (4, 64)
    big = ConvNet(input_shape=(1, 28, 28), channels=(8,) * 4, out_features=5)
    assert big.body(torch.zeros(2, 784)).shape == (2, 8)  # 28->14->7->3->1
    assert big(torch.zeros(2, 784)).shape == (2, 5)


def test_convnet_checks_its_input_width():
    with pytest.raises(ValueError, match=re.escape(
            "input_shape must be (channels, height, width), got (8, 8).")):
        ConvNet(input_shape=(8, 8))
    with pytest.raises(ValueError, match="reads 64 features per row, but the "
                       "data has 65"):
        ConvNet(input_shape=(1, 8, 8), in_features=65)
