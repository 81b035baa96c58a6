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


def _sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """The CPU's fused SDPA kernels (and the overrideable one a backend plugs in), with
    FlopCounterMode's own count for the CUDA kernels: the two attention GEMMs, dense (a causal mask
    is not discounted, as torch does not)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Their backward: the scores recomputed and the four gradient GEMMs (FlopCounterMode's count)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _flash_inplace(out, query, key, value, *args, **kwargs) -> int:
    """The flash forward that writes into `out`: the flash forward's own formula, on raw tensors."""
    from torch.utils.flop_counter import flop_registry

    return flop_registry[_torch().ops.aten._flash_attention_forward](query, key, value, *args, **kwargs)


_flash_inplace._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode passes tensors, not shapes

#: gpuroof's formulas by aten op name; an op this torch build lacks is skipped.
FORMULAS = {
    "mkldnn_rnn_layer": _mkldnn_rnn, "mkldnn_rnn_layer_backward": _mkldnn_rnn_backward,
    "_cudnn_rnn": _cudnn_rnn, "_cudnn_rnn_backward": _cudnn_rnn_backward,
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa,
    "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward,
    "_scaled_dot_product_fused_attention_overrideable": _sdpa,
    "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_backward,
    "_scaled_dot_product_attention_math_for_mps": _sdpa,
    "_flash_attention_forward_no_dropout_inplace": _flash_inplace,
}


def flop_formulas() -> dict:
    """`custom_mapping` for FlopCounterMode: its registry has no entry for the fused RNN kernels,
    which would put a whole nn.LSTM at 0 FLOPs, nor for the SDPA kernels a CPU runs attention on
    (flash for CPU, forward and backward), which would put attention at 0 FLOPs. Elementwise gate
    and softmax math is left out, as FlopCounterMode leaves out every elementwise op."""
    aten = _torch().ops.aten
    return {getattr(aten, name): fn for name, fn in FORMULAS.items() if hasattr(aten, name)}


def flop_counter() -> Any:
    """A FlopCounterMode with gpuroof's formulas, not printing its table."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=flop_formulas())
