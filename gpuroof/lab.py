"""The lab page (`gpuroof report DIR` on a directory of runs): every card and its ceilings on one self-contained page.

Flagged runs come first, each with why (a ceiling below its model's median, a low clock, throttling,
the run's own quality record); then every device model's runs with their ceilings against
theoretical, the figures of `compare` (rooflines, one panel per ceiling, each ceiling over time per
host where runs span days), and every run with a link to its own report. It reads runs only.
"""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from gpuroof import __version__
from gpuroof.compare import (MIN_GROUP, SICK_THRESHOLD, Comparison, compare, complete, fmt_clock, labels,
                             run_clock)
from gpuroof.errors import UsageError
from gpuroof.merge import Skipped, find_runs
from gpuroof.report import CSS, Cell, Markup, esc, figure_html, table
from gpuroof.results import Run, atomic_write_text
from gpuroof.units import si

#: A clock this far under the median clock of its model's runs (given MIN_GROUP or more) is flagged.
CLOCK_BELOW = 0.05
#: Without a quality record of its own, a ceiling this far above theoretical says the clock or the count is wrong.
ABOVE_THEORETICAL = 1.05

LAB_CSS = """
body { max-width: 1440px; } td.nw { white-space: nowrap; }
td.bad { background: var(--badbg); } td.bad b { color: var(--bad); }
td .share { display: block; color: var(--muted); font-size: 0.86em; }
td .share.above { color: var(--bad); font-weight: 600; }
tfoot td { background: #fafafa; font-weight: 500; }
ul.warnings li ul { margin: 4px 0 0; padding-left: 1.2em; }
ul.warnings li ul li { border: none; background: none; padding: 1px 0; margin: 0; }
span.tag { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 0.82em; background: #eee; }
span.tag.bad { background: var(--badbg); color: var(--bad); } span.tag.warn { background: var(--warnbg); color: var(--warn); }
"""


@dataclass
class Concern:
    """Something about a run a reader should know before trusting it: severity bad, warn or info."""

    severity: str
    text: str


@dataclass
class Lab:
    """The runs below a directory: cards (complete, with ceilings of their own), workload-only runs
    (ceilings copied from another run), and what could not be read."""

    root: Path
    cards: list[Run]
    workload_runs: list[Run] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def find_lab(root: str | Path) -> Lab:
    """Every run below `root`, sorted by device model then time; UsageError when none has ceilings."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    found = find_runs([root])
    lab = Lab(root=root, cards=[], skipped=list(found.skipped))
    for r in found.runs:
        if not complete(r):
            lab.skipped.append(Skipped(r.path, f"status {r.meta.get('status')!r}: "
                                               f"{r.meta.get('status_reason') or 'no measured ceilings'}"))
        elif r.meta.get("ceilings_source") and Path(str(r.meta["ceilings_source"])).resolve() != r.path.resolve():
            lab.workload_runs.append(r)  # a bench on another run's ceilings: not a measurement of the card
        else:
            lab.cards.append(r)
    if not lab.cards:
        detail = "; ".join(f"{s.path}: {s.reason}" for s in lab.skipped[:3])
        raise UsageError(f"{root}: holds no complete run with measured ceilings"
                         + (f" ({detail})" if detail else ""))
    lab.cards.sort(key=lambda r: (str(r.meta.get("backend")), str((r.meta.get("device") or {}).get("name")),
                                  str(r.meta.get("created_utc") or ""), str(r.path)))
    return lab


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def concerns(c: Comparison, runs: list[Run]) -> list[list[Concern]]:
    """Per run (in `c.runs` order): why it may not show the card at its best, worst first."""
    from gpuroof.plots.compare import ceiling_title

    rows = c.runs.to_dict("records")
    out: list[list[Concern]] = [[] for _ in runs]
    index = {r["run"]: i for i, r in enumerate(rows)}
    by_run: dict[str, list[dict]] = {}
    for f in c.flags:
        by_run.setdefault(f["run"], []).append(f)
    for run, fs in by_run.items():  # one line per run: a sick card is often low on many ceilings at once
        group = f"the {fs[0]['group_runs']} {fs[0]['device']} runs"
        if len(fs) <= 2:
            text = "; ".join(f"{ceiling_title(f['kind'], f['ceiling'])} {si(f['value'], _unit(f), 3)} is "
                             f"{f['below']:.0%} below the median {si(f['group_median'], _unit(f), 3)}" for f in fs)
            text += f" (median of {group})"
        else:
            text = f"{len(fs)} ceilings below the median of {group}: " + ", ".join(
                f"{ceiling_title(f['kind'], f['ceiling'])} -{f['below']:.0%}" for f in fs)
        out[index[run]].append(Concern("bad", text))
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.get("backend"), r.get("device")), []).append(i)
    for members in groups.values():
        clocks = {i: rows[i]["clock_mhz"] for i in members if _num(rows[i].get("clock_mhz"))}
        if len(clocks) < MIN_GROUP:
            continue
        med = float(np.median(list(clocks.values())))
        for i, mhz in clocks.items():
            if mhz < (1 - CLOCK_BELOW) * med:
                out[i].append(Concern("warn", f"{rows[i]['clock']} clock {mhz:.0f} MHz, {1 - mhz / med:.0%} under "
                                              f"the median {med:.0f} MHz of the {len(clocks)} runs of this model"))
    for i, run in enumerate(runs):
        meta = run.meta
        thr = meta.get("throttled_points")
        if isinstance(thr, int) and thr > 0:
            out[i].append(Concern("warn", f"{thr} sweep point(s) ran while the device was throttled"))
        q = meta.get("quality") if isinstance(meta.get("quality"), dict) else None
        if q is not None:
            sev = "warn" if q.get("ok") else "bad"
            out[i] += [Concern(sev, f"quality: {reason}") for reason in q.get("reasons") or []]
        else:
            for kind in ("compute", "bandwidth"):
                for name, r in ((meta.get("ratios") or {}).get(kind) or {}).items():
                    if _num(r) and r > ABOVE_THEORETICAL:
                        out[i].append(Concern("warn", f"{name} at {r:.0%} of theoretical: the clock or the count is "
                                                      "wrong (the run has no quality record)"))
        word, mhz, _ = run_clock(meta)
        if mhz is None:
            out[i].append(Concern("info", f"{word} clock not measured"
                                  + (" (a run from before gpuroof measured the core clock under load)"
                                     if word == "core" else "")))
    order = {"bad": 0, "warn": 1, "info": 2}
    return [sorted(cs, key=lambda x: order[x.severity]) for cs in out]


def _unit(flag: dict) -> str:
    return "B/s" if flag["kind"] == "bandwidth" else "FLOP/s"


def flagged(cs: list[Concern]) -> bool:
    return any(x.severity in ("bad", "warn") for x in cs)


# --------------------------------------------------------------------------- the page


def _relative(target: Path, page_dir: Path) -> str:
    """A link from the page to `target`, relative so the folder can move."""
    return quote(Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix())


def _href(run: Run, page_dir: Path) -> str | None:
    """A link from the page to the run's own report.html; None without one."""
    target = run.path / "report.html"
    return _relative(target, page_dir) if target.exists() else None


def _run_link(label: str, run: Run, page_dir: Path) -> Markup:
    href = _href(run, page_dir)
    return Markup(f'<a href="{esc(href)}">{esc(label)}</a>' if href else esc(label))


def _when(meta: dict) -> str:
    t = meta.get("created_utc")
    try:
        return datetime.fromisoformat(str(t)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return "-"


def _ceiling_cell(row: dict, kind: str, name: str, col: str, bad: bool) -> Markup:
    """'51.9 GB/s' over '75% of theor.'; a flagged ceiling bold on red."""
    v = _num(row.get(col))
    if v is None:
        return Markup('<span class="muted">-</span>')
    ratio = _num(row.get(f"{name}_ratio"))
    share = ""
    if ratio is not None:
        share = f'<span class="share{" above" if ratio > 1 else ""}">{ratio:.0%} of theor.</span>'
    value = esc(si(v, "B/s" if kind == "bandwidth" else "FLOP/s", 3))
    return Cell(f"<b>{value}</b>{share}", "bad") if bad else Markup(f"{value}{share}")


def cards_html(c: Comparison, runs: list[Run], ids: list[str], page_dir: Path) -> str:
    """Per device model: its runs as rows, its ceilings as columns (value and share of theoretical),
    a flagged ceiling in red; the median and the theoretical peak under them."""
    from gpuroof.plots.compare import ceiling_title, models

    rows = c.runs.to_dict("records")
    bad = {(f["run"], f["ceiling"]) for f in c.flags}
    out = []
    for m in models(c):
        keys = [k for k in c.ceilings if any(_num(rows[i].get(k[2])) for i in m.members)]
        head = ["run (measured, UTC)", "host", "clock"] + [ceiling_title(k, n).replace(" bandwidth", "")
                                                            for k, n, _ in keys]
        body = []
        for i in m.members:
            r = rows[i]
            cells = [Markup(f"{esc(ids[i])} {_run_link(r['run'], runs[i], page_dir)}"
                            f'<span class="share">{esc(_when(runs[i].meta))}</span>'), r.get("host") or "-",
                     Cell(esc(fmt_clock(r.get("clock"), r.get("clock_mhz"))), "nw")]
            body.append(cells + [_ceiling_cell(r, kind, name, col, (r["run"], name) in bad)
                                 for kind, name, col in keys])
        med: list[Any] = [Markup("<b>median</b>"), "", ""]
        theo: list[Any] = [Markup("<b>theoretical</b>"), "", Markup('<span class="muted">at the measured clock</span>')]
        for kind, name, col in keys:
            unit, suffix = ("B/s", "Bps") if kind == "bandwidth" else ("FLOP/s", "flops")
            vals = [v for i in m.members if (v := _num(rows[i].get(col)))]
            ts = [t for i in m.members if (t := _num(rows[i].get(f"{name}_theoretical_{suffix}")))]
            med.append(si(float(np.median(vals)), unit, 3) if vals else "-")
            theo.append(si(float(np.median(ts)), unit, 3) if ts else Markup('<span class="muted">unknown</span>'))
        n = len(m.members)
        out.append(f"<h3>{esc(m.device)} <span class='muted'>· {esc(m.backend)} · {n} run{'s' * (n > 1)}</span></h3>")
        out.append(table(head, body, numeric=range(3, 3 + len(keys)), cls="cards", foot=[med, theo]))
    return "".join(out)


def flagged_html(c: Comparison, runs: list[Run], ids: list[str], cs: list[list[Concern]], page_dir: Path) -> str:
    """The first screen: which runs to look at first and why, the worst first."""
    rows = c.runs.to_dict("records")
    order = sorted((i for i in range(len(runs)) if flagged(cs[i])),
                   key=lambda i: (-sum(x.severity == "bad" for x in cs[i]), -sum(x.severity == "warn" for x in cs[i]),
                                  ids[i]))
    n = len(runs)
    if not order:
        return (f'<p class="verdict"><b>No run flagged.</b> {n} run{"s" * (n > 1)}: every ceiling within '
                f"{c.threshold:.0%} of its model's median (given {MIN_GROUP} or more runs), no low clock, nothing "
                "throttled, no quality concern recorded.</p>")
    worst = "bad" if any(x.severity == "bad" for i in order for x in cs[i]) else "warn"
    out = [f'<p class="verdict {worst}"><b>{len(order)} of {n} run{"s" * (n > 1)} flagged.</b> '
           f"Look at these first: a ceiling more than {c.threshold:.0%} below its model's median, a clock under "
           "its model's, throttling, or the run's own quality record.</p>", '<ul class="warnings">']
    for i in order:
        r = rows[i]
        sev = "bad" if any(x.severity == "bad" for x in cs[i]) else "warn"
        what = f"{r.get('device')} · {r.get('host')} · {_when(runs[i].meta)} UTC · {fmt_clock(r.get('clock'), r.get('clock_mhz'))}"
        reasons = "".join(f'<li><span class="tag {x.severity}">{esc(x.severity)}</span> {esc(x.text)}</li>'
                          for x in cs[i] if x.severity != "info")
        out.append(f'<li class="{sev}"><b>{esc(ids[i])} {_run_link(r["run"], runs[i], page_dir)}</b> '
                   f'<span class="muted">{esc(what)}</span><ul>{reasons}</ul></li>')
    out.append("</ul>")
    return "".join(out)


def runs_html(c: Comparison, runs: list[Run], ids: list[str], cs: list[list[Concern]], lab: Lab,
              page_dir: Path) -> str:
    """Every run found: the cards, the workload-only runs, and what could not be read, with why."""
    rows = c.runs.to_dict("records")
    body = []
    for i, r in enumerate(rows):
        q = runs[i].meta.get("quality") if isinstance(runs[i].meta.get("quality"), dict) else None
        quality = "not recorded" if q is None else ("ok" if q.get("ok") else "not ok")
        n_bad = sum(x.severity in ("bad", "warn") for x in cs[i])
        href = _href(runs[i], page_dir)
        report = Markup(f'<a href="{esc(href)}">report</a>') if href else \
            Markup(f'<span class="muted">none: <code>gpuroof report {esc(shlex.quote(str(runs[i].path)))}</code></span>')
        body.append([ids[i], _run_link(r["run"], runs[i], page_dir), r.get("device") or "-", r.get("host") or "-",
                     Cell(esc(_when(runs[i].meta)), "nw"), Cell(esc(fmt_clock(r.get("clock"), r.get("clock_mhz"))), "nw"),
                     quality,
                     Markup(f'<span class="tag {"bad" if n_bad else ""}">{n_bad}</span>') if n_bad else "-", report])
    out = [table(["#", "run", "device", "host", "measured (UTC)", "clock", "quality", "flags", "own report"], body,
                 cls="runs")]
    if lab.workload_runs:
        names = labels(lab.workload_runs)
        items = "".join(f"<li>{_run_link(n, r, page_dir)}: workloads on the ceilings of "
                        f"<code>{esc(r.meta.get('ceilings_source'))}</code></li>"
                        for n, r in zip(names, lab.workload_runs))
        out.append(f"<h3>Workload runs</h3><p>{len(lab.workload_runs)} run(s) hold workloads placed on another run's "
                   f"ceilings; they are not a measurement of a card and are left out above.</p><ul>{items}</ul>")
    if lab.skipped:
        items = "".join(f"<li><code>{esc(s.path)}</code>: {esc(s.reason)}</li>" for s in lab.skipped)
        out.append(f"<h3>Not read</h3><ul>{items}</ul>")
    return "".join(out)


def models_html(lab: Lab, runs: list[Run], ids: list[str], page_dir: Path) -> str:
    """Models x cards: every profile found below the lab's root predicted on every card of its kind
    (gpuroof.predict: each op keeps its efficiency on the source), beside the time it was profiled at."""
    from gpuroof.predict import find_profiles, models_by_cards

    profiles, bad = find_profiles(lab.root)
    if not profiles:
        return ('<p class="muted">No model profiles below this directory: <code>gpuroof profile ... --out '
                'DIR</code> inside it adds one, and its predicted time on every card appears here.</p>')
    m = models_by_cards(profiles, runs)
    cols = sorted(set(m["run"]))
    header = ["model", "phase", "profiled on", "profiled"] + [ids[j] for j in cols]
    body = []
    for i, p in enumerate(profiles):
        mine = m[m["profile"] == i].set_index("run")
        row = [Markup(f'<a href="{esc(_relative(p.path / "profile.json", page_dir))}">{esc(p.name)}</a>'),
               p.doc["totals"].get("phase") or "-", p.device_name, Cell(esc(si(p.profiled_time_s, "s", 3)), "nw")]
        for j in cols:
            if j not in mine.index:
                row.append("-")
                continue
            r = mine.loc[j]
            tag = ' <span class="tag">source device</span>' if r["source_device"] else ""
            row.append(Cell(f"{esc(si(r['predicted_time_s'], 's', 3))}"
                            f'<span class="share">{r["speedup"]:.2f}x{tag}</span>', "nw"))
        body.append(row)
    names = "; ".join(f"{ids[j]} {esc(runs[j].device_name)}" for j in cols)
    out = [f"<p>Each profile's whole-model time per repetition predicted on every card's measured roofline "
           f"(<code>gpuroof predict</code>: each op keeps the efficiency it had where it was profiled; what has "
           f"no roofline time is carried over as measured), with its speed-up over the profiled time. Columns: "
           f"{names}.</p>", table(header, body, cls="models")]
    if bad:
        items = "".join(f"<li><code>{esc(path)}</code>: {esc(why)}</li>" for path, why in bad)
        out.append(f"<h3>Profiles not read</h3><ul>{items}</ul>")
    return "".join(out)


def render_lab(root: str | Path, page_dir: Path | None = None, threshold: float = SICK_THRESHOLD) -> str:
    """The lab page as one string: styles inline, figures as PNG data URIs, no script, no network."""
    from gpuroof.plots.compare import ceilings_figure, over_time_figure, rooflines_figure

    lab = find_lab(root)
    page_dir = Path(page_dir) if page_dir else lab.root
    runs = lab.cards
    c = compare(runs, 0, threshold, overlap=False)
    ids = [f"#{i}" for i in range(1, len(runs) + 1)]
    cs = concerns(c, runs)
    devices = list(dict.fromkeys(str(r.get("device")) for r in c.runs.to_dict("records")))
    hosts = set(c.runs["host"].astype(str))
    times = sorted(t for r in runs if (t := _when(r.meta)) != "-")
    span = f"{times[0]} to {times[-1]} UTC" if times else "times unknown"
    n = len(runs)
    title = (f"Lab: {n} run{'s' * (n > 1)} of {len(devices)} device model{'s' * (len(devices) > 1)} on "
             f"{len(hosts)} host{'s' * (len(hosts) > 1)}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>gpuroof lab: {esc(lab.root)}</title><style>{CSS}{LAB_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(span)} · <code>{esc(lab.root)}</code> · device models: {esc(", ".join(devices))}</p>',
        "<h2 id='verdict'>Flagged first</h2>", flagged_html(c, runs, ids, cs, page_dir),
        "<h2 id='cards'>Cards: ceilings against theoretical</h2>",
        "<p>Each run's ceilings, with the share of the theoretical peak at the clock it ran at; a ceiling "
        f"flagged below its model's median in red. Clock: the SM clock on a GPU (median during the timed points), "
        "the core clock measured under load on a CPU.</p>",
        cards_html(c, runs, ids, page_dir),
        "<h2 id='figures'>Figures</h2>",
        figure_html("rooflines", rooflines_figure(c), "Rooflines"),
        figure_html("ceilings", ceilings_figure(c), "Every run, per ceiling"),
    ]
    over = over_time_figure(c)
    if over is not None:
        parts.append(figure_html("over-time", over, "Over time"))
    else:
        parts.append(f'<p class="muted">No ceilings-over-time figure: no host\'s runs span a day '
                     f"({esc(span)}); it is drawn once they do.</p>")
    parts += ["<h2 id='models'>Models x cards</h2>", models_html(lab, runs, ids, page_dir)]
    parts += ["<h2 id='runs'>Every run</h2>", runs_html(c, runs, ids, cs, lab, page_dir)]
    parts.append("<h2 id='provenance'>Made with</h2><pre>"
                 + esc(f"gpuroof report {shlex.quote(str(lab.root))}") + "</pre>")
    parts.append(f'<p class="muted">Written {esc(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))} by '
                 f"gpuroof {esc(__version__)} from the run directories alone (nothing measured). Self-contained: "
                 "figures are embedded, nothing is fetched; links lead to each run's own report.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_lab(root: str | Path, out: str | Path | None = None, threshold: float = SICK_THRESHOLD) -> Path:
    """Write the lab page (default DIR/lab.html) atomically and return its path."""
    path = Path(out) if out else Path(root) / "lab.html"
    if path.is_dir():
        path = path / "lab.html"
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: directory {path.parent} does not exist")
    text = render_lab(root, path.parent, threshold)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write ({e.strerror or e})") from None
    return path


__all__ = ["Concern", "Lab", "find_lab", "concerns", "render_lab", "write_lab"]
