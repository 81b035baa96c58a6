"""FLOP formulas FlopCounterMode lacks (fused RNN kernels, the CPU's SDPA kernels, fused transformer fast
paths) and the counter that uses them."""
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

def _lengths(t: Any) -> list[int]:
    """Sequence lengths of a batch-first (B, S, E) input, an unbatched (S, E) one, or a nested tensor
    (the fast path's padding removed: each sequence at its own length)."""
    if getattr(t, "is_nested", False):
        return [int(n) for n in t._nested_tensor_size()[:, 0].tolist()]
    return [int(t.shape[0])] if t.dim() == 2 else [int(t.shape[1])] * int(t.shape[0])


def _mha(query, key, value, embed_dim, num_head, *args, out_shape=None, **kwargs) -> int:
    """nn.MultiheadAttention's fused fast path (eval, no grad): the q, k and v projections, the two
    attention GEMMs (dense) and the output projection, 2 FLOPs per multiply-add."""
    e = int(embed_dim)
    sq, sk = _lengths(query), _lengths(key)
    proj = 2 * e * e * (sum(sq) + 2 * sum(sk))  # q from the queries, k and v from the keys
    return proj + 4 * e * sum(a * b for a, b in zip(sq, sk)) + 2 * e * e * sum(sq)


def _encoder_layer(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first,
                   eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, *args,
                   out_shape=None, **kwargs) -> int:
    """nn.TransformerEncoderLayer's fused fast path: self-attention as above, then the two
    feed-forward GEMMs (E -> F -> E)."""
    tokens = sum(_lengths(src))
    return _mha(src, src, src, embed_dim, num_heads) + 4 * int(embed_dim) * int(ffn_weight_1.shape[0]) * tokens


_mha._get_raw = True  # type: ignore[attr-defined]  # raw tensors: a nested tensor has no plain shape
_encoder_layer._get_raw = True  # type: ignore[attr-defined]

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
    "_native_multi_head_attention": _mha,
    "_transformer_encoder_layer_fwd": _encoder_layer,
}


def flop_formulas() -> dict:
    """`custom_mapping` for FlopCounterMode: its registry has no entry for the fused RNN kernels,
    which would put a whole nn.LSTM at 0 FLOPs, nor for the SDPA kernels a CPU runs attention on
    (flash for CPU, forward and backward), which would put attention at 0 FLOPs, nor for the fused
    fast paths of nn.MultiheadAttention and nn.TransformerEncoderLayer in inference. Elementwise gate
    and softmax math is left out, as FlopCounterMode leaves out every elementwise op."""
    aten = _torch().ops.aten
    return {getattr(aten, name): fn for name, fn in FORMULAS.items() if hasattr(aten, name)}


def flop_counter() -> Any:
    """A FlopCounterMode with gpuroof's formulas, not printing its table."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=flop_formulas())
