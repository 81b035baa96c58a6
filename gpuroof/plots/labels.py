"""Placing text labels on a figure clear of each other, of markers and of lines (greedy, in display space)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np


if TYPE_CHECKING:
    from matplotlib.axes import Axes


def label_box(ann: Any, renderer: Any) -> Any:
    """The box of an annotation's text alone (Annotation.get_window_extent adds its leader line)."""
    from matplotlib.text import Text

    if hasattr(ann, "update_positions"):
        ann.update_positions(renderer)  # where xy and the offset put the text now
    return Text.get_window_extent(ann, renderer)


class LabelPlacer:
    """Greedy placement of text labels in display space so that none overlaps another label, a marker,
    or a roof, and all stay inside the axes. Each label tries candidate offsets around its anchors,
    nearest first; if every candidate collides it takes the least-colliding one with a leader line.
    Roof lines are sampled here only to detect collisions; they are drawn from their end points."""

    #: Collision costs: leaving the axes, then covering another label, a marker, a line.
    OUTSIDE, LABEL, MARKER, LINE = 10_000.0, 1_000.0, 30.0, 10.0

    def __init__(self, ax: "Axes", pad_px: float = 2.0):
        self.ax = ax
        self.fig = ax.figure
        self.renderer = self.fig.canvas.get_renderer()
        self.pad = pad_px
        self.boxes: list[Any] = []
        self.groups: list[tuple[np.ndarray, float, float, bool]] = []  # display xy, radius, cost, per point
        self.placed: list[Any] = []

    def add_points(self, xy_data: np.ndarray, radius_px: float) -> None:
        """Markers: each one covered costs MARKER."""
        if len(xy_data):
            disp = self.ax.transData.transform(np.asarray(xy_data, dtype=float))
            self.groups.append((disp, radius_px, self.MARKER, True))

    def add_polyline(self, x: Iterable[float], y: Iterable[float], radius_px: float = 1.5) -> None:
        """A straight segment on log axes, sampled in log space every pixel or so; crossing it costs LINE."""
        (x0, x1), (y0, y1) = tuple(x), tuple(y)
        t = np.linspace(0.0, 1.0, 400)
        lx = np.exp(np.log(x0) + t * (np.log(x1) - np.log(x0)))
        ly = np.exp(np.log(y0) + t * (np.log(y1) - np.log(y0)))
        disp = self.ax.transData.transform(np.column_stack([lx, ly]))
        self.groups.append((disp, radius_px, self.LINE, False))

    def _hits(self, bb: Any, lines: bool = True) -> float:
        ax_bb = self.ax.get_window_extent(self.renderer)
        score = 0.0
        if bb.x0 < ax_bb.x0 or bb.x1 > ax_bb.x1 or bb.y0 < ax_bb.y0 or bb.y1 > ax_bb.y1:
            score += self.OUTSIDE
        for other in self.boxes:
            if bb.x0 < other.x1 + self.pad and bb.x1 > other.x0 - self.pad and \
                    bb.y0 < other.y1 + self.pad and bb.y1 > other.y0 - self.pad:
                score += self.LABEL
        for p, r, cost, each in self.groups:
            if not lines and not each:
                continue
            inside = (p[:, 0] > bb.x0 - r) & (p[:, 0] < bb.x1 + r) & (p[:, 1] > bb.y0 - r) & (p[:, 1] < bb.y1 + r)
            score += cost * (float(inside.sum()) if each else float(inside.any()))
        return score

    def place(self, text: str, anchors: list[tuple[float, float]],
              offsets: Iterable[tuple[float, float]] | None = None, gid: str | None = None,
              rotation: float = 0.0, lines: bool = True, accept: float | None = None,
              align: tuple[str, str] | None = None, **kw: Any) -> Any:
        """Place `text` near one of `anchors` (data coordinates); offsets are in points.

        `lines=False` ignores roof lines (a label set along its own slope touches it by design).
        A label whose best place still costs more than `accept` is not drawn (None); by default
        that is a label that could only stand outside the axes."""
        if offsets is None:
            offsets = [(dx * r, dy * r) for r in (5, 10, 18, 28, 40)
                       for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1.4, 0), (-1.4, 0), (0, 1.4), (0, -1.4))]
        offsets = list(offsets)
        probe = self.ax.annotate(text, xy=anchors[0], xytext=(0, 0), textcoords="offset points",
                                 rotation=rotation, rotation_mode="anchor", annotation_clip=False, **kw)
        best = None
        for anchor in anchors:
            for dx, dy in offsets:
                probe.xy = anchor
                probe.set_position((dx, dy))
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                if align:
                    ha, va = align
                probe.set_ha(ha)
                probe.set_va(va)
                score = self._hits(label_box(probe, self.renderer), lines)
                if best is None or score < best[0]:
                    best = (score, anchor, (dx, dy), ha, va)
                if score == 0:
                    break
            if best and best[0] == 0:
                break
        probe.remove()
        assert best is not None  # anchors and offsets are never empty
        if best[0] > (self.OUTSIDE - 1 if accept is None else accept):
            return None
        _, anchor, (dx, dy), ha, va = best
        far = math.hypot(dx, dy) > 12  # a label pushed away keeps a leader line to its point
        ann = self.ax.annotate(text, xy=anchor, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               rotation=rotation, rotation_mode="anchor", zorder=6, annotation_clip=False,
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#666666", "shrinkA": 1,
                                           "shrinkB": 3} if far else None, **kw)
        if gid:
            ann.set_gid(gid)
        self.boxes.append(label_box(ann, self.renderer))
        self.placed.append(ann)
        return ann
