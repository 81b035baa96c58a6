"""Models for `gpuroof profile`, random weights: the TPU paper's MLP, LSTM and CNN, and transformers models.

Each function takes `batch` and returns (model, inputs); nothing is downloaded:

    gpuroof profile --model experiments/profile_models.py:mlp --batch 1
    gpuroof profile --model experiments/profile_models.py:mlp --batch 256

At batch 1 an MLP reads every weight to do 2 FLOPs with it (0.5 FLOP/B in float32) and an LSTM
reads each weight once per sequence for 2 FLOPs per step (STEPS / 2 FLOP/B, counting compulsory
bytes): both sit under the bandwidth slope. The FLOPs grow with the batch and the weight bytes do
not, so a large batch moves them toward the compute roof. A CNN reuses each weight over every pixel
and sits right of the ridge already at batch 1.

The transformers models (pip install 'gpuroof[transformers]') are built from their configs, GPT-2
small and BERT-base by default; their inputs are keyword arguments, as a tokenizer's output is passed:

    gpuroof profile --model experiments/profile_models.py:gpt2_prefill   # 128-token prompt
    gpuroof profile --model experiments/profile_models.py:gpt2_decode    # one token, 128 in the KV cache
    gpuroof profile --model experiments/profile_models.py:bert           # input_ids, attention_mask, ...
    gpuroof profile --model experiments/profile_models.py:gpt2_prefill --backward

A model function returns (model, inputs): inputs a tensor (model(x)), a tuple of positional arguments,
a dict of keyword arguments (model(**inputs)) or a pair (args, kwargs).
"""
from __future__ import annotations

from typing import Any

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


# ---------------------------------------------------------------------------------------------
# transformers models from their configs (random weights, nothing downloaded): pip install
# 'gpuroof[transformers]'. Each size argument defaults to the published model's.
# ---------------------------------------------------------------------------------------------

PROMPT = 128  # tokens of the prompt a decoder prefills, and the KV cache one decode step reads
SENTENCE = 128  # tokens of an encoder's input


def _gpt2(layers: int, width: int, heads: int, vocab: int, positions: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=positions,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    return GPT2LMHeadModel(config).eval()


def gpt2_prefill(batch: int = 1, seq: int = PROMPT, layers: int = 12, width: int = 768, heads: int = 12,
                 vocab: int = 50257) -> tuple[nn.Module, dict]:
    """GPT-2 (small by default) reading a prompt of `seq` tokens and filling its KV cache: the first step
    of generate(), called with keyword inputs."""
    model = _gpt2(layers, width, heads, vocab, max(1024, seq + 1))
    return model, {"input_ids": torch.randint(0, vocab, (batch, seq))}


class DecodeStep(nn.Module):
    """One token of generation: the decoder reads its KV cache of `past` tokens and appends one.

    The cache is filled by a prefill of the prompt on the device of the first input, and cut back to
    the prompt after each call (a view, no data moved), so every repetition decodes the same step:
    appending to the cache (torch.cat in transformers' DynamicCache) is part of what is timed, as it
    is in generate()."""

    def __init__(self, model: nn.Module, prompt: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("prompt", prompt)
        self.cache: Any = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cache is None or self.cache.get_seq_length() != self.prompt.shape[1] \
                or self._cache_device != input_ids.device:
            with torch.no_grad():
                self.cache = _cache_of(self.model(input_ids=self.prompt, use_cache=True))
            self._cache_device = input_ids.device
        out = self.model(input_ids=input_ids, use_cache=True, **{_cache_argument(self.model): self.cache})
        self.cache.crop(-input_ids.shape[1])  # drop the tokens just appended (negative: as many as that)
        return out.logits


def _cache_argument(model: nn.Module) -> str:
    """The keyword a transformers model takes its KV cache by: `cache` (5.x), `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def gpt2_decode(batch: int = 1, past: int = PROMPT, layers: int = 12, width: int = 768, heads: int = 12,
                vocab: int = 50257) -> tuple[nn.Module, torch.Tensor]:
    """GPT-2 generating one token after a prompt of `past` tokens, whose KV cache a prefill filled."""
    model = _gpt2(layers, width, heads, vocab, max(1024, past + 2))
    prompt = torch.randint(0, vocab, (batch, past))
    return DecodeStep(model, prompt).eval(), torch.randint(0, vocab, (batch, 1))


def bert(batch: int = 1, seq: int = SENTENCE, layers: int = 12, width: int = 768, heads: int = 12,
         intermediate: int = 3072, vocab: int = 30522) -> tuple[nn.Module, dict]:
    """BERT (base by default) encoding `seq` tokens, called as a tokenizer's output is passed: keyword
    arguments, an attention mask that hides the last quarter of each sequence (padding) among them."""
    from transformers import BertConfig, BertModel

    config = BertConfig(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                        intermediate_size=intermediate, vocab_size=vocab, max_position_embeddings=max(512, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[:, seq - seq // 4:] = 0
    return BertModel(config).eval(), {"input_ids": torch.randint(0, vocab, (batch, seq)), "attention_mask": mask,
                                      "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}
