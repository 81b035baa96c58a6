"""Parsing sizes from the command line and printing rates with scaled units."""
from __future__ import annotations

import math
import re

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


def text_table(rows: list) -> list[str]:
    """Rows of cells (the first row is the header) as left-aligned lines, a dashed rule under the
    header (tabulate's "simple" format; cells are printed as given, never re-parsed as numbers)."""
    from tabulate import tabulate

    text = tabulate([[str(c) for c in r] for r in rows[1:]], headers=[str(c) for c in rows[0]], tablefmt="simple",
                    disable_numparse=True, stralign="left")
    return [line.rstrip() for line in text.splitlines()]


def si(value: float | None, unit: str, digits: int = 4) -> str:
    """1.234e12, 'FLOP/s' -> '1.234 TFLOP/s'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return f"0 {unit}"
    prefixes = ["", "k", "M", "G", "T", "P", "E"]
    i = max(0, min(len(prefixes) - 1, int(math.floor(math.log10(abs(value)) / 3))))
    return f"{value / 1000 ** i:.{digits}g} {prefixes[i]}{unit}"
