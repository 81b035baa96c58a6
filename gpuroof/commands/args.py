"""Argument types of every command in one place: each turns bad input into one argparse error line."""
from __future__ import annotations

import argparse
from typing import Callable

from gpuroof.errors import UsageError
from gpuroof.units import FIGURE_FORMATS as FORMATS, parse_bytes


def size(text: str) -> int:
    try:
        n = parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return n


def device(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a device index (0, 1, ...) or 'all'")


def index(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a device index (0, 1, ...)")


def str_list(text: str) -> list[str]:
    """A comma-separated list: empty (which would silently mean 'all') and repeated items refused."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r}: empty (give one or more names, or leave the option out)")
    twice = sorted({t for t in items if items.count(t) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(twice)} given more than once")
    return items


def formats(text: str) -> tuple[str, ...]:
    items = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{text!r}: not supported (allowed: {', '.join(FORMATS)}, "
                                         "or several joined by commas)")
    return items


def positive(text: str) -> int:
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a positive integer")


def percentage(below: float, example: str) -> Callable[[str], float]:
    """A percentage in [0, below) given as '10' or '10%', returned as a fraction."""
    def parse(text: str) -> float:
        try:
            v = float(text.rstrip("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: a percentage, e.g. {example}") from None
        if not 0 <= v < below:
            raise argparse.ArgumentTypeError(f"{text!r}: a percentage in [0, {below:g})")
        return v / 100
    return parse


def devices(args: argparse.Namespace) -> list[int]:
    """The device indices --device names (an index, or all of them), checked against the backend."""
    from gpuroof.backends import device_count

    n = device_count(args.backend)
    if args.device == "all":
        return list(range(n))
    if args.device >= n:
        raise UsageError(f"--device {args.device}: this machine has {n} device(s) for the "
                         f"{args.backend} backend (allowed: 0..{n - 1} or all)")
    return [args.device]
