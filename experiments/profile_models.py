"""The TPU paper's three kinds of network (MLP, LSTM, CNN), random weights, for `gpuroof profile`.

Each function takes `batch` and returns (model, inputs); nothing is downloaded:

    gpuroof profile --model experiments/profile_models.py:mlp --batch 1
    gpuroof profile --model experiments/profile_models.py:mlp --batch 256

At batch 1 an MLP reads every weight to do 2 FLOPs with it (0.5 FLOP/B in float32) and an LSTM
reads each weight once per sequence for 2 FLOPs per step (STEPS / 2 FLOP/B, counting compulsory
bytes): both sit under the bandwidth slope. The FLOPs grow with the batch and the weight bytes do
not, so a large batch moves them toward the compute roof. A CNN reuses each weight over every pixel
and sits right of the ridge already at batch 1.
"""
from __future__ import annotations

import torch
from torch import nn

torch.manual_seed(0)

#: Sizes small enough for 2 CPU cores, large enough that the ops, not Python, take the time.
WIDTH = 1024  # MLP hidden width
LAYERS = 4
HIDDEN = 512  # LSTM hidden size
STEPS = 8  # LSTM sequence length
IMAGE = 32  # CNN input height and width


class MLP(nn.Module):
    def __init__(self, width: int = WIDTH, layers: int = LAYERS):
        super().__init__()
        blocks = []
        for _ in range(layers):
            blocks += [nn.Linear(width, width), nn.ReLU()]
        self.net = nn.Sequential(*blocks)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


class LSTMNet(nn.Module):
    def __init__(self, hidden: int = HIDDEN, layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class SmallCNN(nn.Module):
    """Three 3x3 convolution stages (conv, batch norm, ReLU, pooling) and a linear classifier."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        stages, c_in = [], 3
        for c in channels:
            stages += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(c_in * (IMAGE // 2 ** len(channels)) ** 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def mlp(batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    return MLP().eval(), torch.randn(batch, WIDTH)


def lstm(batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    return LSTMNet().eval(), torch.randn(batch, STEPS, HIDDEN)


def cnn(batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    return SmallCNN().eval(), torch.randn(batch, 3, IMAGE, IMAGE)
