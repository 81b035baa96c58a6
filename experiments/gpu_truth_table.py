"""The peers' outputs read back, and the table of gpuroof against each peer and the theoretical peaks.

    python experiments/gpu_truth_table.py OUT [--write-doc docs/benchmarks.md] [--json FILE]

OUT is the folder `experiments/gpu_truth.py` wrote (or one laid out the same way): run/ (a gpuroof
run), peers/mixbench.txt, peers/babelstream.txt, peers/nvbandwidth.txt and torch_matmul.json. Each
parser reads the format its tool prints, as its own repository shows it (tests/data/peers/ keeps
those samples, with their source named in its README):

- mixbench (mixbench-cuda, `mix_kernels_cuda.cu`): the "CSV data" block, one row per compute-iteration
  count, four groups of columns (single, double, half precision, integer): Flops/byte, ex.time (ms),
  GFLOPS, GB/sec. Its kernel only reads (`mixbench/read-only`): GB/sec counts bytes read.
- BabelStream (`src/main.cpp`): the table that begins with `Function`, its second column the rate
  in the unit named in its header (`MBytes/sec` up to 3.x, `MB/s`, `GB/s`, ... from 4.0), or the
  `--csv` table (`function,num_times,n_elements,sizeof,max_<unit>_per_sec,...`). Copy and Mul count
  two arrays moved, Add and Triad three, Dot two: bytes read plus bytes written.
- nvbandwidth (`output.cpp`, `inline_common.h`): `Running <testcase>.`, a description that ends
  `bandwidth (GB/s)`, a matrix (column labels, then one row per label, `N/A` where a pair does not
  apply), optionally `SUM <testcase> <value>`. Its rate is the bytes copied over the time (GB/s,
  1e9): a device-local copy reads and writes each byte, so the DRAM traffic is twice the rate.
- torch.matmul (this project's own step, `gpu_truth.py matmul`): JSON, one sample per dtype, size and
  repetition; the best size per dtype is recomputed here from the median times.

Every rate in the table counts compulsory traffic and FLOPs the way gpuroof does (README: an FMA is 2
FLOPs; bytes are each input read once and each output written once). Cells are rounded for
reading only; `--json` keeps every value as measured. Nothing in the table is typed in: a source
that is absent or unreadable leaves its cells empty and says why under the table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The markers between which `--write-doc` replaces the table in docs/benchmarks.md.
BEGIN, END = "<!-- gpu-truth-table:begin -->", "<!-- gpu-truth-table:end -->"

#: Where each source lies under OUT (gpu_truth.py writes these names).
FILES = {"gpuroof": "run", "mixbench": "peers/mixbench.txt", "babelstream": "peers/babelstream.txt",
         "nvbandwidth": "peers/nvbandwidth.txt", "torch_matmul": "torch_matmul.json"}

#: The table's columns, in order.
COLUMNS = ("quantity", "gpuroof", "mixbench", "BabelStream", "nvbandwidth", "torch.matmul",
           "theoretical (recorded clock)", "theoretical (max clock)", "gpuroof / best peer",
           "gpuroof / theoretical", "target", "met")

#: The issue's targets: DRAM at least the best peer; vector units at least 0.97 of the theoretical
#: peak at the recorded SM clock and at least mixbench; matrix units at least 0.97 of torch.matmul.
VECTOR_OF_THEORETICAL = 0.97
MATRIX_OF_TORCH = 0.97

VECTOR_DTYPES = ("float64", "float32", "float16", "bfloat16")
MATRIX_DTYPES = ("float64", "float32", "tf32", "float16", "bfloat16", "int8")
#: mixbench's column groups, as its header names them, and the gpuroof unit each one measures.
MIXBENCH_GROUPS = (("single", "float32"), ("double", "float64"), ("half", "float16"), ("integer", "int32"))


class ParseError(ValueError):
    """An output that is not in its tool's format: the message names the file and what is missing."""


def _float(text: str) -> float:
    """A printed number; `inf`, `nan` and `-nan` (what printf writes after a division by 0) as floats."""
    t = text.strip().lower().lstrip("-")
    if t in ("inf", "nan", "-nan"):
        return math.inf if t == "inf" else math.nan
    return float(text)


def _good(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


# ---------------------------------------------------------------------------------------------
# mixbench
# ---------------------------------------------------------------------------------------------

def parse_mixbench(text: str) -> dict:
    """mixbench-cuda's output: device, and per compute-iteration count the four groups' rates.

    Returns {'tool', 'device', 'rows': [{'compute_iters', '<group>': {'flops_per_byte', 'time_ms',
    'gflops', 'gbps'}}], 'best': {'bandwidth_Bps', 'compute': {unit: ops/s}}}: the best memory rate
    over every row and group (the top of its memory plateau) and each group's best op rate. A group
    that did not run (half precision on a GPU without it prints a time of 0) has no best."""
    lines = text.splitlines()
    device = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Device:")), None)
    try:
        head = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Compute iters,"))
    except StopIteration:
        raise ParseError("mixbench: no 'Compute iters, Flops/byte, ...' header (the CSV data block)") from None
    rows = []
    for ln in lines[head + 1:]:
        s = ln.strip()
        if not s or s.startswith("---"):
            break
        cells = [c.strip() for c in s.split(",")]
        if len(cells) != 17:
            raise ParseError(f"mixbench: a CSV data row has {len(cells)} fields, not 17: {s!r}")
        try:
            values = [_float(c) for c in cells]
        except ValueError:
            raise ParseError(f"mixbench: a CSV data row holds a field that is not a number: {s!r}") from None
        row: dict[str, Any] = {"compute_iters": int(values[0])}
        for g, (group, _unit) in enumerate(MIXBENCH_GROUPS):
            fpb, ms, gops, gbps = values[1 + 4 * g: 5 + 4 * g]
            row[group] = {"flops_per_byte": fpb, "time_ms": ms, "gflops": gops, "gbps": gbps}
        rows.append(row)
    if not rows:
        raise ParseError("mixbench: the CSV data block has no rows")
    bandwidth = [r[g]["gbps"] * 1e9 for r in rows for g, _ in MIXBENCH_GROUPS if _good(r[g]["gbps"])
                 and _good(r[g]["time_ms"])]
    compute = {}
    for group, unit in MIXBENCH_GROUPS:
        rates = [r[group]["gflops"] * 1e9 for r in rows if _good(r[group]["gflops"]) and _good(r[group]["time_ms"])]
        if rates:
            compute[unit] = max(rates)
    return {"tool": "mixbench", "device": device, "rows": rows,
            "best": {"bandwidth_Bps": max(bandwidth) if bandwidth else None, "compute": compute},
            "conventions": "GB/sec: bytes read (the read-only kernel) over the kernel time, 1e9; "
                           "an FMA is 2 FLOPs, half2 counts both halves"}


# ---------------------------------------------------------------------------------------------
# BabelStream
# ---------------------------------------------------------------------------------------------

#: Bytes per unit BabelStream prints (src/Unit.h; 'MBytes' is the name up to 3.x).
BABEL_UNITS = {"mbytes": 1e6, "mb": 1e6, "gb": 1e9, "tb": 1e12, "mib": 2.0 ** 20, "gib": 2.0 ** 30,
               "tib": 2.0 ** 40}


def _babel_unit(name: str) -> float:
    try:
        return BABEL_UNITS[name.lower()]
    except KeyError:
        raise ParseError(f"BabelStream: unknown rate unit {name!r} (known: {', '.join(BABEL_UNITS)})") from None


def parse_babelstream(text: str) -> dict:
    """BabelStream's table (the plain one or `--csv`): per kernel the best rate in B/s and the
    minimum, maximum and average time (s); the best kernel; device, version and precision."""
    lines = text.splitlines()
    device = None
    for ln in lines:
        m = re.match(r'\s*Using \w+ device (.+?)\s*$', ln) or re.match(r'\s*CUDA Device \d+: "([^"]+)"', ln)
        if m:
            device = m.group(1)
            break
    version = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Version:")), None)
    precision = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Precision:")), None)
    kernels: dict[str, dict] = {}
    for i, ln in enumerate(lines):
        cells = ln.split()
        if ln.startswith("function,"):  # --csv
            cols = ln.strip().split(",")
            m = re.fullmatch(r"max_(\w+)_per_sec", cols[4]) if len(cols) > 4 else None
            if not m:
                raise ParseError(f"BabelStream: CSV header without max_<unit>_per_sec: {ln!r}")
            scale = _babel_unit(m.group(1))
            for row in lines[i + 1:]:
                vals = row.strip().split(",")
                if len(vals) != len(cols):
                    break
                rec = dict(zip(cols, vals))
                kernels[rec["function"]] = {"bandwidth_Bps": float(rec[cols[4]]) * scale,
                                            "min_s": float(rec["min_runtime"]), "max_s": float(rec["max_runtime"]),
                                            "avg_s": float(rec["avg_runtime"])}
            break
        if cells[:1] == ["Function"] and len(cells) >= 2:
            m = re.fullmatch(r"(\w+)/s(ec)?", cells[1])
            if not m:
                raise ParseError(f"BabelStream: header's rate column is not <unit>/s: {ln!r}")
            scale = _babel_unit(m.group(1))
            for row in lines[i + 1:]:
                vals = row.split()
                if len(vals) != 5:
                    break
                try:
                    rate, tmin, tmax, tavg = (float(v) for v in vals[1:])
                except ValueError:
                    break
                kernels[vals[0]] = {"bandwidth_Bps": rate * scale, "min_s": tmin, "max_s": tmax, "avg_s": tavg}
            break
    if not kernels:
        raise ParseError("BabelStream: no results table (a 'Function' header or a --csv header with rows)")
    best = max(kernels, key=lambda k: kernels[k]["bandwidth_Bps"])
    return {"tool": "BabelStream", "device": device, "version": version, "precision": precision,
            "kernels": kernels, "best": {"kernel": best, "bandwidth_Bps": kernels[best]["bandwidth_Bps"]},
            "conventions": "bytes read plus bytes written per kernel (Copy, Mul 2 arrays; Add, Triad 3; "
                           "Dot 2) over the fastest repetition"}


# ---------------------------------------------------------------------------------------------
# nvbandwidth
# ---------------------------------------------------------------------------------------------

def parse_nvbandwidth(text: str) -> dict:
    """nvbandwidth's plain output: per testcase its description, column labels, rows of GB/s (None
    for N/A), the SUM line's value and any status line (WAIVED, ERROR); the devices it lists."""
    lines = text.splitlines()
    devices = {}
    for ln in lines:
        m = re.match(r"Device (\d+): (.+?)(?: \([0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+\))?\s*$", ln)
        if m:
            devices[int(m.group(1))] = m.group(2)
    tests: dict[str, dict] = {}
    i = 0
    while i < len(lines):
        m = re.match(r"Running (\S+)\.\s*$", lines[i])
        if not m:
            i += 1
            continue
        name, i = m.group(1), i + 1
        test: dict[str, Any] = {"description": None, "columns": [], "rows": {}, "sum": None, "status": None}
        tests[name] = test
        while i < len(lines) and not lines[i].startswith("Running "):
            ln = lines[i]
            if test["description"] is None and re.search(r"bandwidth \(GB/s\)\s*$", ln):
                test["description"] = ln.strip()
                test["columns"] = lines[i + 1].split() if i + 1 < len(lines) else []
                i += 2
                while i < len(lines) and lines[i].strip():
                    cells = lines[i].split()
                    if len(cells) != len(test["columns"]) + 1:
                        raise ParseError(f"nvbandwidth: {name}: a row has {len(cells) - 1} values for "
                                         f"{len(test['columns'])} columns: {lines[i]!r}")
                    test["rows"][cells[0]] = [None if c == "N/A" else _float(c) for c in cells[1:]]
                    i += 1
                continue
            s = re.match(rf"SUM {re.escape(name)} (\S+)", ln)
            if s:
                test["sum"] = _float(s.group(1))
            st = re.match(r"(WAIVED|ERROR|FAILED|SKIPPED?)\b:?\s*(.*)", ln.strip())
            if st:
                test["status"] = f"{st.group(1)}: {st.group(2)}".strip()
            i += 1
    if not tests:
        raise ParseError("nvbandwidth: no 'Running <testcase>.' line")
    return {"tool": "nvbandwidth", "devices": devices, "device": devices.get(0), "testcases": tests,
            "best": nvbandwidth_best(tests),
            "conventions": "GB/s (1e9) of bytes copied; a device-local copy reads and writes each byte, so "
                           "dram_traffic_Bps is twice the rate"}


def nvbandwidth_best(tests: dict[str, dict]) -> dict:
    """Device 0's device-local copy rate (B/s of bytes copied) and the DRAM traffic it means (twice:
    each byte read and written). The matrix printer is the same for every testcase."""
    local = tests.get("device_local_copy")
    copy = None
    if local and local["rows"]:
        vals = [v for row in local["rows"].values() for v in row if _good(v)]
        copy = vals[0] * 1e9 if vals else None  # one GPU: its own column; several: the first (device 0)
    return {"device_local_copy_Bps": copy, "dram_traffic_Bps": 2 * copy if copy else None}


# ---------------------------------------------------------------------------------------------
# torch.matmul (gpu_truth.py's own step)
# ---------------------------------------------------------------------------------------------

def parse_torch_matmul(text: str) -> dict:
    """The torch.matmul step's JSON: checked, and each dtype's best size recomputed from the samples
    (median time of the valid repetitions; a size whose result failed its check is left out)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"torch.matmul: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "gpu-truth-torch-matmul":
        raise ParseError("torch.matmul: not a gpu-truth-torch-matmul document (its 'kind')")
    samples = doc.get("samples")
    if not isinstance(samples, list):
        raise ParseError("torch.matmul: no 'samples' list")
    by: dict[tuple[str, int], list] = {}
    for s in samples:
        for k in ("dtype", "n", "flops", "time_s", "valid"):
            if k not in s:
                raise ParseError(f"torch.matmul: a sample has no {k!r}: {s}")
        if s["valid"] and s["time_s"]:
            by.setdefault((s["dtype"], int(s["n"])), []).append((float(s["flops"]), float(s["time_s"])))
    best: dict[str, dict] = {}
    for (dtype, n), recs in by.items():
        rate = recs[0][0] / statistics.median(t for _, t in recs)
        if dtype not in best or rate > best[dtype]["flop_per_s"]:
            best[dtype] = {"n": n, "flop_per_s": rate, "reps": len(recs)}
    return {"tool": "torch.matmul", "device": doc.get("device"), "torch": doc.get("torch"),
            "unsupported": doc.get("unsupported", {}), "best": best,
            "conventions": doc.get("conventions")}


# ---------------------------------------------------------------------------------------------
# gpuroof's run
# ---------------------------------------------------------------------------------------------

def read_gpuroof(run_dir: Path) -> dict:
    """The run through gpuroof's own schema (results.load_run): ceilings, theoretical peaks at the
    recorded and the max clock, device, quality, and whether it is a synthetic fixture."""
    from gpuroof.results import load_run

    run = load_run(run_dir)
    m = run.meta
    return {"tool": "gpuroof", "device": run.device_name, "path": str(run.path), "status": run.status,
            "ceilings": m.get("ceilings") or {}, "theoretical": m.get("theoretical") or {},
            "theoretical_at_max_clock": m.get("theoretical_at_max_clock") or {},
            "median_clocks": m.get("median_clocks") or {}, "quality": run.quality,
            "synthetic": m.get("synthetic_fixture")}


PARSERS = {"mixbench": parse_mixbench, "babelstream": parse_babelstream, "nvbandwidth": parse_nvbandwidth,
           "torch_matmul": parse_torch_matmul}


@dataclass
class Sources:
    """What was read from OUT: each source's parsed output, or why it is missing."""
    parsed: dict[str, dict] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def read_sources(out: Path) -> Sources:
    src = Sources()
    for name, rel in FILES.items():
        path = out / rel
        if not path.exists():
            src.missing[name] = f"{rel} absent"
            continue
        try:
            if name == "gpuroof":
                src.parsed[name] = read_gpuroof(path)
            else:
                src.parsed[name] = PARSERS[name](path.read_text(encoding="utf-8", errors="replace"))
        except Exception as e:  # a broken source leaves its cells empty, with the reason under the table
            src.missing[name] = f"{rel}: {type(e).__name__}: {e}".replace("\n", " ")
    return src


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

def _get(d: dict, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)  # type: ignore[assignment]
    return float(d) if isinstance(d, (int, float)) and math.isfinite(d) else None


def rows_of(src: Sources) -> list[dict]:
    """One row per quantity, every value in B/s or FLOP/s (OP/s for int8) as read, ratios as fractions."""
    g = src.parsed.get("gpuroof", {})
    mix = src.parsed.get("mixbench", {}).get("best", {})
    babel = src.parsed.get("babelstream", {}).get("best", {})
    nvb = src.parsed.get("nvbandwidth", {}).get("best", {})
    torch_best = src.parsed.get("torch_matmul", {}).get("best", {})
    rows = []

    def row(quantity: str, unit: str, kind: str, key: str, peers: dict[str, float | None], target: str) -> None:
        mine = _get(g, "ceilings", kind, key)
        theo, theo_max = _get(g, "theoretical", kind, key), _get(g, "theoretical_at_max_clock", kind, key)
        known = {k: v for k, v in peers.items() if v is not None}
        best_peer = max(known.values()) if known else None
        r = {"quantity": quantity, "unit": unit, "gpuroof": mine, **{p: peers.get(p) for p in
             ("mixbench", "BabelStream", "nvbandwidth", "torch.matmul")},
             "theoretical": theo, "theoretical_at_max_clock": theo_max,
             "over_best_peer": mine / best_peer if mine and best_peer else None,
             "over_theoretical": mine / theo if mine and theo else None, "target": target}
        r["met"] = _met(r, target)
        rows.append(r)

    row("DRAM bandwidth", "B/s", "bandwidth", "dram",
        {"mixbench": mix.get("bandwidth_Bps"), "BabelStream": babel.get("bandwidth_Bps"),
         "nvbandwidth": nvb.get("dram_traffic_Bps")}, ">= 1.00 x best peer")
    row("L2 bandwidth", "B/s", "bandwidth", "l2", {}, "above DRAM")
    for dt in VECTOR_DTYPES:
        row(f"{dt} vector", "FLOP/s", "compute", dt, {"mixbench": mix.get("compute", {}).get(dt)},
            f">= {VECTOR_OF_THEORETICAL:.2f} x theoretical and >= mixbench" if dt != "bfloat16"
            else f">= {VECTOR_OF_THEORETICAL:.2f} x theoretical")
    for dt in MATRIX_DTYPES:
        t = torch_best.get(dt, {}).get("flop_per_s")
        if (g or torch_best) and _get(g, "ceilings", "compute", f"{dt}-matrix") is None and t is None:
            continue  # a unit neither side measured (an empty OUT lists every unit)
        row(f"{dt} matrix", "OP/s" if dt == "int8" else "FLOP/s", "compute", f"{dt}-matrix",
            {"torch.matmul": t}, f">= {MATRIX_OF_TORCH:.2f} x torch.matmul")
    l2 = next((r for r in rows if r["quantity"] == "L2 bandwidth"), None)
    dram = next((r for r in rows if r["quantity"] == "DRAM bandwidth"), None)
    if l2 and dram:
        l2["met"] = (None if l2["gpuroof"] is None or dram["gpuroof"] is None
                     else l2["gpuroof"] > dram["gpuroof"])
    return rows


def _met(r: dict, target: str) -> bool | None:
    mine = r["gpuroof"]
    if mine is None:
        return None
    if target.startswith(">= 1.00 x best peer"):
        return None if r["over_best_peer"] is None else r["over_best_peer"] >= 1.0
    if "torch.matmul" in target:
        t = r["torch.matmul"]
        return None if t is None else mine >= MATRIX_OF_TORCH * t
    if "theoretical" in target:
        checks = []
        if r["theoretical"] is not None:
            checks.append(mine >= VECTOR_OF_THEORETICAL * r["theoretical"])
        if "mixbench" in target and r["mixbench"] is not None:
            checks.append(mine >= r["mixbench"])
        return all(checks) if checks else None
    return None


def _rate(x: float | None, unit: str) -> str:
    if x is None:
        return "—"
    big = {"B/s": "TB/s", "FLOP/s": "TFLOP/s", "OP/s": "TOP/s"}[unit]
    return f"{x / 1e12:.3g} {big}" if x >= 1e11 else f"{x / 1e9:.3g} G{unit}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _norm(name: str | None) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\(.*?\)", "", name or "")).strip().lower()


def render(src: Sources) -> str:
    """The markdown block docs/benchmarks.md holds: sources and their devices, the table, notes."""
    rows = rows_of(src)
    names = {"gpuroof": "gpuroof run", "mixbench": "mixbench", "babelstream": "BabelStream",
             "nvbandwidth": "nvbandwidth", "torch_matmul": "torch.matmul"}
    lines = ["Sources and the device each names:", ""]
    for key, label in names.items():
        if key in src.parsed:
            p = src.parsed[key]
            extra = ""
            if key == "gpuroof":
                q = p.get("quality") or {}
                extra = f" ({p['path']}; quality {'ok' if q.get('ok') else 'not ok'}"
                extra += f": {'; '.join(q.get('reasons', []))})" if q.get("reasons") else ")"
                if p.get("synthetic"):
                    extra += f" — SYNTHETIC FIXTURE, not a measurement: {p['synthetic']}"
            lines.append(f"- {label}: {p.get('device') or 'device not named'}{extra}")
        else:
            lines.append(f"- {label}: not read ({src.missing.get(key, 'absent')})")
    devices = {_norm(p.get("device")) for p in src.parsed.values() if p.get("device")}
    if len(devices) > 1:
        lines += ["", "**The sources name different devices: this table compares nothing until they are "
                      "one run's outputs.**"]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        cells = [r["quantity"], *(_rate(r[c], r["unit"]) for c in ("gpuroof", "mixbench", "BabelStream",
                                                                     "nvbandwidth", "torch.matmul",
                                                                     "theoretical", "theoretical_at_max_clock")),
                 _ratio(r["over_best_peer"]), _ratio(r["over_theoretical"]), r["target"], met]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Conventions: every bandwidth counts bytes read plus bytes written (mixbench's kernel "
                  "only reads; nvbandwidth's device-local copy rate is doubled: it reports bytes copied); "
                  "an FMA is 2 FLOPs; torch.matmul is each dtype's best size, median time; theoretical "
                  "peaks are gpuroof's (run.json), at the SM clock recorded during the ceiling's own points "
                  "and at the card's max clock."]
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, block: str) -> None:
    """Replace what lies between the markers of `doc` with `block` (temp file, then rename)."""
    text = doc.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{doc}: needs one {BEGIN} line and one {END} line after it")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write(doc, f"{head}{BEGIN}\n{block}{END}{tail}")


def atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the folder gpu_truth.py wrote")
    p.add_argument("--write-doc", metavar="MD", help="replace the table between the markers of this file")
    p.add_argument("--json", metavar="FILE", help="write the rows with every value as read")
    p.add_argument("--markdown", metavar="FILE", help="write the block to this file")
    a = p.parse_args(argv)
    out = Path(a.out)
    if not out.is_dir():
        print(f"gpu_truth_table: {out}: not a directory", file=sys.stderr)
        return 2
    if a.write_doc and not Path(a.write_doc).is_file():
        print(f"gpu_truth_table: --write-doc {a.write_doc}: no such file", file=sys.stderr)
        return 2
    src = read_sources(out)
    block = render(src)
    print(block, end="")
    try:
        if a.markdown:
            atomic_write(Path(a.markdown), block)
        if a.json:
            atomic_write(Path(a.json), json.dumps({"rows": rows_of(src), "missing": src.missing,
                                                   "sources": src.parsed}, indent=1, default=str))
        if a.write_doc:
            write_doc(Path(a.write_doc), block)
    except (OSError, ValueError) as e:
        print(f"gpu_truth_table: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
