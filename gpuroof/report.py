"""`report.html`: one self-contained page that holds a whole run (tables, figures, warnings, provenance)."""
from __future__ import annotations

import base64
import html
import math
import shlex
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from gpuroof import __version__
from gpuroof.errors import UsageError
from gpuroof.hostbound import flagged
from gpuroof.results import Run, atomic_write_text
from gpuroof.roofline import known
from gpuroof.units import fmt_time, si

ABOVE_ROOF = 0.05  # a sweep point more than 5% above min(P, B·I) is reported
POOR_FIT = 0.10  # a median |deviation| from the model above 10% is reported

CSS = """
:root { --fg: #1b1b1b; --muted: #5b5b5b; --line: #d9d9d9; --warn: #8a4b00; --warnbg: #fff4e0;
        --bad: #9b1c1c; --badbg: #fdecec; --okbg: #eef7ee; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1200px; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; } h3 { font-size: 1em; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 0.9em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
table.kv th { width: 14em; background: none; font-weight: 500; color: var(--muted); }
ul.warnings { list-style: none; padding: 0; margin: 8px 0; }
ul.warnings li { padding: 6px 10px; margin: 4px 0; border-left: 4px solid var(--warn); background: var(--warnbg); }
ul.warnings li.bad { border-color: var(--bad); background: var(--badbg); }
ul.warnings li.info { border-color: #5b7fa6; background: #eef3f9; }
p.ok { padding: 6px 10px; background: var(--okbg); border-left: 4px solid #2e7d32; }
p.verdict { padding: 8px 12px; border-left: 4px solid #2e7d32; background: var(--okbg); font-size: 1.05em; }
p.verdict.warn { border-color: var(--warn); background: var(--warnbg); }
p.verdict.bad { border-color: var(--bad); background: var(--badbg); }
ol li { margin: 3px 0; }
figure { margin: 14px 0 26px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: 0.88em; max-width: 60em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.88em; }
pre { background: #f6f6f6; padding: 8px 10px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
table.work { font-size: 0.82em; } span.note { display: inline-block; max-width: 22em; }
.above { color: var(--bad); font-weight: 600; } .muted { color: var(--muted); }
details summary { cursor: pointer; color: #1f4e79; }
@media print { body { max-width: none; } figure { break-inside: avoid; } }
"""


# --------------------------------------------------------------------------- formatting


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def fmt_bytes(n: float | None) -> str:
    if n is None or not math.isfinite(float(n)):
        return "-"
    for i, unit in enumerate(("B", "KiB", "MiB", "GiB", "TiB")):
        if abs(n) < 1024 ** (i + 1) or unit == "TiB":
            return f"{n / 1024 ** i:.4g} {unit}"
    return f"{n} B"


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "-" if not math.isfinite(f) else f"{f:.{digits}g}"


def _num(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def table(header: list[str], rows: Iterable[list[Any]], numeric: Iterable[int] = (), cls: str = "",
          foot: Iterable[list[Any]] = ()) -> str:
    """An HTML table; cells are escaped unless given as `Markup` (a `Cell` adds its own class);
    `foot` rows (totals, medians) go in a <tfoot>."""
    num = set(numeric)
    out = ['<div class="scroll">', f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f'<th class="num">{esc(h)}</th>' if i in num else f"<th>{esc(h)}</th>" for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")

    def row(r: list[Any]) -> str:
        tds = []
        for i, c in enumerate(r):
            classes = " ".join(x for x in ("num" if i in num else "", getattr(c, "css", "")) if x)
            text = c if isinstance(c, Markup) else esc(c)
            tds.append(f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>")
        return "<tr>" + "".join(tds) + "</tr>"

    out += [row(r) for r in rows]
    out.append("</tbody>")
    foot = [row(r) for r in foot]
    if foot:
        out += ["<tfoot>", *foot, "</tfoot>"]
    out.append("</table></div>")
    return "".join(out)


class Markup(str):
    """A string that is already HTML."""


class Cell(Markup):
    """A table cell that is already HTML and carries a class of its own (e.g. 'bad')."""

    def __new__(cls, text: str, css: str = "") -> "Cell":
        obj = super().__new__(cls, text)
        obj.css = css
        return obj


def kv_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v if isinstance(v, Markup) else esc(v)}</td></tr>"
                   for k, v in items if v not in (None, "", [], {}))
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    return struct.unpack(">II", data[16:24])


def figure_html(fname: str, d: Any, title: str | None = None) -> str:
    """A figure embedded as a PNG data URI at its drawn size (100 CSS px per inch), with its caption."""
    from gpuroof import plots

    png = plots.render(d, "png")
    w, h = png_size(png)
    css_w = round(w * 100 / plots.PNG_DPI)  # figures were drawn for 100 CSS px per inch
    css_h = round(h * 100 / plots.PNG_DPI)
    return (f'<figure id="fig-{esc(fname)}"><img src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}" width="{css_w}" height="{css_h}" '
            f'alt="{esc(fname)} figure"><figcaption><b>{esc(title or fname.capitalize())}.</b> '
            f"{esc(d.caption)}</figcaption></figure>")


# --------------------------------------------------------------------------- content


def device_rows(device: dict) -> list[tuple[str, Any]]:
    rows = []
    for k, v in device.items():
        if k == "caches" and isinstance(v, list):
            v = "; ".join(f"L{c.get('level')} {c.get('type', '')} {fmt_bytes(c.get('size_bytes'))}"
                          + (f" (shared by {c['shared_by_cpus']})" if c.get("shared_by_cpus", 1) > 1 else "")
                          for c in v if isinstance(c, dict))
        elif k.endswith("_bytes") and _num(v) is not None:
            v = f"{fmt_bytes(_num(v))} ({int(v)} B)"
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        rows.append((k.replace("_", " "), v))
    return rows


def host_rows(host: dict) -> list[tuple[str, Any]]:
    rows = []
    for k, v in host.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or None
        rows.append((k, v))
    return rows


def ceiling_source(kind: str, name: str) -> str:
    """Which measurement a ceiling comes from (see measure.py)."""
    if kind == "compute":
        return "GEMM sweep" if name.endswith("-matrix") else "intensity sweep (FMA)"
    return {"dram": "intensity sweep (streaming)", "shared": "shared-memory kernel"}.get(name, "working-set sweep")


def ceilings_table(meta: dict) -> str:
    cei, theo = meta["ceilings"], meta.get("theoretical") or {}
    at_max = meta.get("theoretical_at_max_clock") or {}
    ratios = meta.get("ratios") or {}
    ridge = meta.get("ridge_points") or {}
    rows = []
    for kind, unit in (("bandwidth", "B/s"), ("compute", "FLOP/s")):
        for name, v in (cei.get(kind) or {}).items():
            r = (ratios.get(kind) or {}).get(name)
            ratio = Markup(f'<span class="above">{r:.3f}</span>') if r and r > 1.0 else (f"{r:.3f}" if r else "-")
            rows.append([f"{name} {'bandwidth' if kind == 'bandwidth' else 'compute'}", si(_num(v), unit),
                         si(_num((theo.get(kind) or {}).get(name)), unit), ratio,
                         si(_num((at_max.get(kind) or {}).get(name)), unit),
                         fmt_num(ridge.get(name)) if kind == "compute" else "", ceiling_source(kind, name)])
    return table(["ceiling", "measured", "theoretical (measured clock)", "measured / theoretical",
                  "theoretical (max clock)", "ridge vs DRAM (FLOP/B)", "measured by"], rows,
                 numeric=(1, 2, 3, 4, 5))


def sweep_above_roof(meta: dict, pts: pd.DataFrame) -> pd.DataFrame:
    """Valid sweep points more than ABOVE_ROOF above the fitted roof, with how far (`ratio`)."""
    roof = known(meta["ceilings"])
    comp, bw = roof.compute, roof.bandwidth.get("dram")
    if not bw:
        return pts.iloc[0:0].assign(ratio=[])
    ok = pts[pts["valid"] & pts["dtype"].isin(comp)].copy()
    peak = ok["dtype"].map(comp).astype(float)
    intensity = ok["intensity_flop_per_byte"].astype(float)
    # at intensity 0 the roof is the bandwidth itself; elsewhere achieved FLOP/s against min(P, B·I)
    ok["ratio"] = np.where(intensity > 0, ok["flops_per_s"] / np.minimum(peak, bw * intensity),
                           ok["bandwidth_Bps"] / bw)
    return ok[ok["ratio"] > 1 + ABOVE_ROOF].sort_values("ratio", ascending=False)


def collect_warnings(run: Run, pts: pd.DataFrame | None, work: pd.DataFrame | None,
                     tel: pd.DataFrame | None) -> list[tuple[str, str]]:
    """(severity, text) for everything a reader should not miss; severity is bad, warn or info."""
    from gpuroof.nvml import THROTTLE_BITS, reason_names

    meta = run.meta
    out: list[tuple[str, str]] = []
    val = meta.get("validation") or {}
    n_invalid = int((~pts["valid"]).sum()) if pts is not None else 0
    if n_invalid:
        which = ", ".join(f"{r.dtype} {r.variant} {int(r.fmas_per_element)} FMAs" for r in
                          pts[~pts["valid"]].itertuples())
        out.append(("bad", f"{n_invalid} of {len(pts)} sweep points failed the output check and are left out "
                           f"of the ceilings: {which}."))
    elif val.get("invalid"):
        out.append(("bad", f"run.json records {val['invalid']} invalid point(s)."))
    if val.get("invalid_matrix_sizes"):
        out.append(("bad", f"{val['invalid_matrix_sizes']} GEMM sample(s) of the matrix sweep failed their check "
                           "and are left out of the matrix ceilings."))
    if meta.get("matrix_failed_units"):
        from gpuroof.matrix import failure_warnings
        try:  # the size that failed and the sizes the ceiling came from are in matrix.csv
            matrix = run.table("matrix")
        except UsageError:
            matrix = None
        out += failure_warnings(meta["matrix_failed_units"], (meta.get("ceilings") or {}).get("compute"), matrix)
    if meta.get("host_bound_points"):
        out.append(("warn", f"{meta['host_bound_points']} sweep point(s) were host-bound: enqueueing their "
                            "launches took at least 90% of their device time, so they measure the host."))
    hinv = (meta.get("hierarchy") or {}).get("invalid_sizes")
    if hinv:
        out.append(("bad", f"{hinv} working-set size(s) of the hierarchy sweep failed their check and are left "
                           "out of the cache-level ceilings."))
    thr = meta.get("throttled_points")
    reasons = None
    if tel is not None and "clock_event_reasons" in tel:
        masks = pd.to_numeric(tel["clock_event_reasons"], errors="coerce").dropna().astype(int)
        if len(masks):
            seen = int(np.bitwise_or.reduce(masks.to_numpy()))
            reasons = [n for n in reason_names(seen) if n in THROTTLE_BITS.values()]
    if thr:
        out.append(("warn", f"{thr} sweep point(s) ran while the device was throttled"
                            + (f" ({', '.join(reasons)})" if reasons else "") + "; their rates are low."))
    elif reasons:
        out.append(("warn", f"the device was throttled during the run ({', '.join(reasons)}), outside the "
                            "timed points."))
    if reasons is None and not thr and tel is not None:
        out.append(("info", "throttling is not observable on this backend (no clock-event reasons recorded)."))
    above = sweep_above_roof(meta, pts) if pts is not None else []
    if len(above):
        llc = _num((meta.get("device") or {}).get("llc_bytes")) or _num((meta.get("device") or {}).get("l2_bytes"))
        top = above.iloc[0]
        cached = int((above["working_set_bytes"] < (llc or 0) * 4).sum()) if llc and "working_set_bytes" in above else 0
        text = (f"{len(above)} valid sweep point(s) are more than {ABOVE_ROOF:.0%} above the fitted roof "
                f"min(P, B·I); the largest is {top['dtype']} {top['variant']} {int(top['fmas_per_element'])} FMAs "
                f"at {top['ratio']:.2f}× the roof.")
        if cached:
            text += (f" {cached} of them have a working set under 4× the last-level cache ({fmt_bytes(llc)}): "
                     "data reused from a cache, not DRAM.")
        out.append(("warn", text))
    fit = meta.get("fit") or {}
    mad = _num(fit.get("median_abs_deviation"))
    if mad is not None and mad > POOR_FIT:
        out.append(("warn", f"the sweep follows min(P, B·I) poorly: median |deviation| {mad:.0%}, "
                            f"max {(_num(fit.get('max_abs_deviation')) or 0):.0%} (see the sweep figure)."))
    for kind in ("compute", "bandwidth"):
        for name, r in ((meta.get("ratios") or {}).get(kind) or {}).items():
            if r and r > 1.0:
                msg = f"measured {name} {kind} is {r:.2f}× its theoretical peak at the measured clock"
                cc = meta.get("core_clock") if isinstance(meta.get("core_clock"), dict) else {}
                if kind == "compute" and not _num(cc.get("measured_mhz")):
                    msg += ": no clock was measured under load, so theoretical uses the OS's figure"
                out.append(("warn", msg + "."))
    for name, c in ((meta.get("disturbed") or {}).get("by_sweep") or {}).items():
        if isinstance(c, dict) and c.get("disturbed"):
            out.append(("warn", f"{c['disturbed']} of {c.get('points')} {name} point(s) were timed only while other "
                                "processes were busy (after re-measurement); the ceilings leave them out."))
    if work is not None and "disturbed" in work:
        busy = work[work["disturbed"].fillna(False).astype(bool)]
        if len(busy):
            out.append(("warn", f"{len(busy)} workload case(s) were timed only while other processes were busy: "
                                f"{', '.join(f'{r.name} {r.case}' for r in busy.itertuples())}; their times are "
                                "not the hardware's."))
    noisy = meta.get("noisy_points")
    if noisy:
        out.append(("info", f"{noisy} sweep point(s) are noisy: their IQR exceeds 10% of the median time."))
    if work is not None:
        for r in work.itertuples():
            name = f"{r.name}" + (f" {r.case}" if "case" in work and pd.notna(getattr(r, "case", None)) else "")
            if not r.valid:
                out.append(("bad", f"workload {name}: output check failed; its time is not trustworthy."))
            if r.above_roof:
                note = getattr(r, "notes", None)
                out.append(("warn", f"workload {name} is above its roof"
                                    + (f": {note}" if isinstance(note, str) and note else ".")))
    if meta.get("status") != "complete":
        out.append(("bad", f"the run is {meta.get('status')}: {meta.get('status_reason', 'it did not finish')}."))
    return out


def trust(meta: dict, warnings: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """('yes' | 'with caveats' | 'no', reasons): can this run's numbers be compared with another's?

    run.json's optional `quality` object ({"ok": bool, "reasons": [...], "warnings": [...]}: load,
    governor, clock, BLAS) speaks first, then the workloads' own window (`workloads.quality`: was the
    machine quiet while they were timed); then what the report's own checks found (failed checks,
    throttling, a poor fit)."""
    q = meta.get("quality") if isinstance(meta.get("quality"), dict) else {}
    wq = (meta.get("workloads") or {}).get("quality") if isinstance(meta.get("workloads"), dict) else None
    wq = wq if isinstance(wq, dict) else {}
    reasons = [str(r) for r in q.get("reasons") or []] + [f"workloads: {r}" for r in wq.get("reasons") or []]
    caveats = [str(w) for w in q.get("warnings") or []]
    bad = [t for sev, t in warnings if sev == "bad"]
    warn = [t for sev, t in warnings if sev == "warn"]
    if bad or q.get("ok") is False or wq.get("ok") is False:
        return "no", reasons + bad + caveats + warn
    if warn or reasons or caveats:
        return "with caveats", reasons + caveats + warn
    return "yes", []


def verdict_html(meta: dict, warnings: list[tuple[str, str]], work: pd.DataFrame | None) -> str:
    """The first screen: is the run trustworthy, how close is each ceiling to theoretical, and which
    workloads lose the most time and what the roofline says to do about it."""
    from gpuroof.plots import lost_time
    from gpuroof.plots.roofline import unit_name

    answer, reasons = trust(meta, warnings)
    fit = _num((meta.get("fit") or {}).get("median_abs_deviation"))
    cls = {"yes": "ok", "with caveats": "warn", "no": "bad"}[answer]
    out = [f'<p class="verdict {cls}"><b>Trustworthy: {esc(answer)}.</b> ']
    out.append(esc(f"The sweep follows min(P, B·I) within {fit:.1%} (median)." if fit is not None else ""))
    if reasons:
        out.append(" " + esc(f"{len(reasons)} thing(s) to know first: {reasons[0]}")
                   + (' <a href="#warnings">all warnings</a>' if len(reasons) > 1 else ""))
    out.append("</p>")
    theo, ratios = meta.get("theoretical") or {}, meta.get("ratios") or {}
    rows = []
    for kind, unit in (("compute", "FLOP/s"), ("bandwidth", "B/s")):
        for name, v in (meta["ceilings"].get(kind) or {}).items():
            r = _num((ratios.get(kind) or {}).get(name))
            label = unit_name(name) if kind == "compute" else f"{name.upper()} bandwidth"
            rows.append([label, si(_num(v), unit), si(_num((theo.get(kind) or {}).get(name)), unit),
                         Markup(f'<span class="above">{r:.0%}</span>') if r and r > 1 else (f"{r:.0%}" if r else
                                                                                            "unknown")])
    out.append(table(["ceiling", "measured", "theoretical", "measured / theoretical"], rows, numeric=(1, 2, 3),
                     cls="verdict"))
    if work is not None:
        lt = lost_time(work, meta)
        lt = lt[lt["lost_s"] > 0].head(3)
        if len(lt):
            out.append("<p><b>Where the time goes</b> (measured minus what the roofline predicts, per call):</p><ol>")
            out += [f"<li><b>{esc(r.label)}</b> (#{r.ref}) loses {esc(fmt_time(r.lost_s))} of "
                    f"{esc(fmt_time(r.time_s))}: {esc(r.advice)}.</li>" for r in lt.itertuples()]
            out.append("</ol>")
        else:
            out.append('<p class="ok">Every workload runs at its roofline prediction: no time lost to find.</p>')
    return "".join(out)


def workloads_table(work: pd.DataFrame) -> str:
    rows = []
    for i, r in enumerate(work.to_dict("records"), start=1):  # i: the number the roofline uses for it
        eff = _num(r.get("efficiency"))
        mop = _num(r.get("measured_over_predicted"))
        unit = r.get("roof_unit") if isinstance(r.get("roof_unit"), str) and r.get("roof_unit") else r.get("unit")
        level = r.get("level") if isinstance(r.get("level"), str) else "dram"
        flags = [f for f, on in (("above roof", r.get("above_roof")), ("INVALID", not r.get("valid")),
                                 ("host-bound", flagged(r.get("host_bound"))),
                                 ("busy", r.get("disturbed") is True or r.get("disturbed") is np.True_)) if on]
        rows.append([
            i, r.get("name"), r.get("case", ""), r.get("dtype"), unit if level == "dram" else f"{unit} · {level}",
            fmt_num(r.get("intensity")), r.get("bound") if isinstance(r.get("bound"), str) else "-",
            si(_num(r.get("achieved_flops")), "FLOP/s"), si(_num(r.get("attainable_flops")), "FLOP/s"),
            Markup(f'<span class="above">{eff:.1%}</span>') if eff and eff > 1 else (f"{eff:.1%}" if eff else "-"),
            f"{fmt_time(_num(r.get('time_s')))} / {fmt_time(_num(r.get('predicted_time_s')))}"
            + (f" ({mop:.2f}×)" if mop else ""),
            Markup(f'<span class="above">{esc(", ".join(flags))}</span>') if flags else "",
            Markup(f'<span class="note">{esc(r["notes"])}</span>') if isinstance(r.get("notes"), str) else ""])
    return table(["#", "workload", "case", "dtype", "roof", "FLOP/B", "bound", "achieved", "attainable",
                  "efficiency", "time measured / predicted", "flags", "notes"],
                 rows, numeric=(0, 5, 7, 8, 9, 10), cls="work")


def points_table(pts: pd.DataFrame) -> str:
    rows = []
    for r in pts.itertuples():
        rows.append([r.dtype, r.variant, int(r.fmas_per_element), fmt_num(r.intensity_flop_per_byte),
                     fmt_bytes(getattr(r, "working_set_bytes", float("nan"))), int(r.reps), fmt_time(r.time_s),
                     si(r.flops_per_s, "FLOP/s") if r.flops_per_s > 0 else "-", si(r.bandwidth_Bps, "B/s"),
                     "ok" if r.valid else "INVALID", "yes" if r.throttled else ""])
    return table(["dtype", "variant", "FMAs", "FLOP/B", "working set", "reps", "median time", "FLOP/s", "B/s",
                  "check", "throttled"], rows, numeric=(2, 3, 4, 5, 6, 7, 8))


def render_html(run: Run) -> str:
    """The whole page as one string: styles inline, figures as PNG data URIs, no script, no network."""
    from gpuroof import plots

    run = plots.as_run(run)
    drawn, skipped = plots.draw_figures(run, "all")  # refuses a run with no valid point, or nothing to show
    has_points = (run.path / "points.csv").exists()  # a bench-only run has workloads and no sweep
    s = plots.samples(run) if has_points else None
    pts = plots.medians(s) if s is not None else None
    meta = run.meta
    work = plots.workload_points(run)
    tel = plots.optional_table(run, "telemetry")
    dev = meta.get("device") or {}
    name = dev.get("name", "?")
    warnings = collect_warnings(run, pts, work, tel)

    clocks = meta.get("median_clocks") or {}
    cpu = meta.get("backend") == "cpu"
    core = "core" if cpu else "SM"  # the device's own word for where the FMAs run
    # where NVML's power came from: instantaneous, or a 1 s average (nvml.POWER_SOURCES)
    power_source = dev.get("power_source_note") or dev.get("power_source")

    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request: the page never touches the network
        f"<title>gpuroof: {esc(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Roofline of {esc(name)}</h1>",
        f'<p class="sub">backend {esc(meta.get("backend"))} · run {esc(meta.get("created_utc", "?"))} · '
        f'status {esc(meta.get("status"))} · <code>{esc(run.path)}</code></p>',
        "<h2 id='verdict'>Verdict</h2>", verdict_html(meta, warnings, work),
        "<h2 id='warnings'>Warnings</h2>",
    ]
    if warnings:
        parts.append('<ul class="warnings">' + "".join(f'<li class="{sev}">{esc(t)}</li>' for sev, t in warnings)
                     + "</ul>")
    else:
        parts.append('<p class="ok">No warnings: every point passed its check, nothing throttled, '
                     "nothing above its roof.</p>")

    parts.append("<h2 id='ceilings'>Ceilings: measured against theoretical</h2>")
    cc = meta.get("core_clock") if isinstance(meta.get("core_clock"), dict) else {}
    stat = meta.get("ceiling_statistic") if isinstance(meta.get("ceiling_statistic"), dict) else {}
    parts.append(ceilings_table(meta))
    fit = meta.get("fit") or {}
    parts.append(kv_table([
        ("median clocks during points", f"{core} {fmt_num(clocks.get('sm_clock_mhz'), 5)} MHz"
         + (f", memory {fmt_num(clocks.get('mem_clock_mhz'), 5)} MHz" if _num(clocks.get("mem_clock_mhz")) else "")),
        ("max clocks", ", ".join(f"{ {'sm': core, 'mem': 'memory'}.get(k, k)} {fmt_num(v, 5)} MHz"
                                 for k, v in (meta.get("max_clocks_mhz") or {}).items() if _num(v))),
        ("core clock measured under load (dependent-add chain)",
         f"{_num(cc.get('measured_mhz')):.0f} MHz (OS: {fmt_num(cc.get('os_reported_mhz'), 5)} MHz); "
         "theoretical is at this clock" if _num(cc.get("measured_mhz")) else cc.get("reason")),
        ("ceiling statistic", (stat.get("statistic") or "") + "; spread (p90-p10)/p90: " + ", ".join(
            f"{k} {v['spread']:.1%}" for k, v in (stat.get("by_ceiling") or {}).items()
            if isinstance(v, dict) and _num(v.get("spread")) is not None) if stat.get("statistic") else None),
        ("median power, temperature", f"{fmt_num(clocks.get('power_w'))} W, {fmt_num(clocks.get('temperature_c'))} °C"
         + (f" (power: {power_source})" if power_source and _num(clocks.get("power_w")) else "")
         if _num(clocks.get("power_w")) or _num(clocks.get("temperature_c")) else None),
        ("fit to min(P, B·I)", f"median |dev| {fmt_num(fit.get('median_abs_deviation'))}, max |dev| "
                               f"{fmt_num(fit.get('max_abs_deviation'))} over {fit.get('points', '?')} points"),
        ("validation", f"{(meta.get('validation') or {}).get('invalid', '?')} invalid of "
                       f"{(meta.get('validation') or {}).get('points', '?')} points"),
        ("throttled points", meta.get("throttled_points")),
    ]))

    parts.append("<h2 id='figures'>Figures</h2>")
    parts += [figure_html(fname, d) for fname, d in drawn.items()]
    for fname, why in skipped.items():
        parts.append(f'<p class="muted">No {esc(fname)} figure: {esc(why)}.</p>')

    parts.append("<h2 id='workloads'>Workloads</h2>")
    if work is not None:
        parts.append("<p>Each case placed on the measured roofline: attainable = min(compute ceiling of its unit, "
                     "bandwidth × intensity); predicted time = max(FLOPs / compute, bytes / bandwidth).</p>")
        parts.append(workloads_table(work))
    else:
        parts.append('<p class="muted">No workloads were run with this measurement (no workloads.csv).</p>')

    parts.append("<h2 id='device'>Device and host</h2><h3>Device</h3>")
    parts.append(kv_table(device_rows(dev)))
    parts.append("<h3>Host</h3>" + kv_table(host_rows(meta.get("host") or {})))

    parts.append("<h2 id='points'>Sweep points</h2>")
    if pts is not None and s is not None:
        parts.append(f"<details><summary>{len(pts)} points, median of {len(s)} timed samples "
                     "(click to show)</summary>" + points_table(pts) + "</details>")
    else:
        src = meta.get("ceilings_source") or (meta.get("workloads") or {}).get("ceilings_source")
        parts.append('<p class="muted">This run holds workloads only; its ceilings come from '
                     + (f"<code>{esc(src)}</code>" if src else "another run") + ".</p>")

    conv = meta.get("conventions") or {}
    cmd = meta.get("command") or []
    parts.append("<h2 id='provenance'>Command and versions</h2>")
    parts.append("<h3>Measured with</h3><pre>" + esc(shlex.join(map(str, cmd)) if isinstance(cmd, list) else cmd)
                 + "</pre>")
    parts.append("<h3>Report made with</h3><pre>" + esc(f"gpuroof report {shlex.quote(str(run.path))}")
                 + "</pre>")
    parts.append(kv_table([(k, v) for k, v in (meta.get("versions") or {}).items()]
                          + [("gpuroof (report)", __version__)]))
    if conv:
        parts.append("<h3>Counting conventions</h3>" + kv_table(list(conv.items())))
    settings = meta.get("settings") or {}
    if settings:
        parts.append("<h3>Sweep settings</h3>" + kv_table(
            [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in settings.items()]))
    parts.append(f'<p class="muted">Written {esc(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))} '
                 f"by gpuroof {esc(__version__)}. Self-contained: figures are embedded, nothing is fetched.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run: Run | str | Path, out: str | Path | None = None) -> Path:
    """Write report.html (default <run>/report.html) atomically and return its path."""
    from gpuroof import plots

    r = plots.as_run(run)
    path = Path(out) if out else r.path / "report.html"
    if path.is_dir():
        path = path / "report.html"
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: directory {path.parent} does not exist")
    text = render_html(r)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write ({e.strerror or e})") from None
    return path
