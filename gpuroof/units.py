"""Parsing sizes from the command line and printing rates with scaled units."""
from __future__ import annotations

import math
import re

#: The file formats a figure can be written in (gpuroof.plots; the CLI checks --format against them).
FIGURE_FORMATS = ("png", "svg", "pdf")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'512M', '1GiB', '300MB', '4096' -> bytes. K/M/G/T with or without 'iB' are binary (1024);
    'kB', 'MB', 'GB', 'TB' are decimal, as SI says."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 4096, 512M, 1GiB, 300MB)")
    num, prefix, suffix = float(m.group(1)), m.group(2).lower(), m.group(3).lower()
    power = " kmgt".index(prefix) if prefix else 0
    base = 1000 if suffix == "b" and prefix else 1024
    return int(num * base ** power)


def text_table(rows: list, maxcolwidths: list[int | None] | None = None) -> list[str]:
    """Rows of cells (the first row is the header) as left-aligned lines, a dashed rule under the
    header (tabulate's "simple" format; cells are printed as given, never re-parsed as numbers).
    A column with a `maxcolwidths` entry wraps its cells onto more lines past that many characters."""
    from tabulate import tabulate

    text = tabulate([[str(c) for c in r] for r in rows[1:]], headers=[str(c) for c in rows[0]], tablefmt="simple",
                    disable_numparse=True, stralign="left", maxcolwidths=maxcolwidths)
    return [line.rstrip() for line in text.splitlines()]


def fitted_table(rows: list, width: int) -> list[str]:
    """`text_table`, with the widest columns wrapped (never below 8 characters) until every line
    fits `width` characters, where that is possible."""
    ncols = len(rows[0])
    limits: list[int | None] = [None] * ncols
    lines = text_table(rows)
    while max(map(len, lines)) > width:
        widths = [max(len(line) for c in (r[i] for r in rows) for line in str(c).splitlines() or [""])
                  if limits[i] is None else limits[i] for i in range(ncols)]
        i = max(range(ncols), key=lambda j: widths[j])
        if widths[i] <= 8:
            break
        over = max(map(len, lines)) - width
        second = max((w for j, w in enumerate(widths) if j != i), default=0)
        limits[i] = max(8, min(widths[i] - 1, max(second, widths[i] - over)))  # shrink the widest, evenly
        lines = text_table(rows, limits)
    return lines


def si(value: float | None, unit: str, digits: int = 4) -> str:
    """1.234e12, 'FLOP/s' -> '1.234 TFLOP/s'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return f"0 {unit}"
    prefixes = ["", "k", "M", "G", "T", "P", "E"]
    i = max(0, min(len(prefixes) - 1, int(math.floor(math.log10(abs(value)) / 3))))
    return f"{value / 1000 ** i:.{digits}g} {prefixes[i]}{unit}"


def fmt_time(t: float | None) -> str:
    """Seconds with a prefix that keeps 3-4 digits: 1.3e-5 -> '13 µs'; '-' when unknown."""
    if t is None or not isinstance(t, (int, float)) or not math.isfinite(t):
        return "-"
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(t) >= scale:
            return f"{t / scale:.4g} {unit}"
    return f"{t:.3g} s"
