"""FLOP formulas FlopCounterMode lacks (fused RNN kernels, the CPU's SDPA kernels) and the counter that uses them."""
from __future__ import annotations

import math
from typing import Any

from gpuroof.profiling import need_torch as _torch

def _tokens(input_shape: Any) -> int:
    return math.prod(input_shape[:-1])


def _mkldnn_rnn(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's RNN layer (nn.LSTM/GRU on a CPU): the two gate GEMMs, 2 FLOPs per weight per token."""
    return 2 * _tokens(input_shape) * (math.prod(w_ih) + math.prod(w_hh))


def _mkldnn_rnn_backward(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """Its backward: the input gradient and the weight gradient, each as many FLOPs as the forward."""
    return 2 * _mkldnn_rnn(input_shape, w_ih, w_hh)


def _cudnn_rnn(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    """cuDNN's RNN (every layer and direction): 2 FLOPs per weight-matrix element per token."""
    return 2 * _tokens(input_shape) * sum(math.prod(w) for w in weights if len(w) == 2)


def _cudnn_rnn_backward(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    return 2 * _cudnn_rnn(input_shape, weights)


def flop_formulas() -> dict:
    """`custom_mapping` for FlopCounterMode: its registry has no entry for the fused RNN kernels,
    which would put a whole nn.LSTM at 0 FLOPs. Elementwise gate math is left out, as
    FlopCounterMode leaves out every elementwise op."""
    torch = _torch()
    aten = torch.ops.aten
    table = {"mkldnn_rnn_layer": _mkldnn_rnn, "mkldnn_rnn_layer_backward": _mkldnn_rnn_backward,
             "_cudnn_rnn": _cudnn_rnn, "_cudnn_rnn_backward": _cudnn_rnn_backward}
    return {getattr(aten, name): fn for name, fn in table.items() if hasattr(aten, name)}


def flop_counter() -> Any:
    """A FlopCounterMode with gpuroof's RNN formulas, not printing its table."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=flop_formulas())

