"""Kernel shapes tried on the machine itself: the fastest streaming loop per level, kept and recorded.

A loop shape tuned on one core is wrong on the next (Zen 5 reads its L2 at half speed with the zmm
loop that suits Emerald Rapids, and at full speed with ymm), and a hand-written kernel per ISA, as
likwid-bench has, cannot know that. So before a level is measured, each candidate shape the backend
offers (`Backend.kernel_variants`) is launched on that level's working set, validated against the
closed form and timed for a short budget; the fastest valid one is kept for every point of that
level, and the trial is written to run.json (device.kernel_shape.tuned) with every candidate's rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuroof.backends.base import ITEMSIZE, SweepBuffers
from gpuroof.quality import quiet_window
from gpuroof.sweep import TOLERANCE, check, counts

#: A candidate replaces the register file's own shape only when it is this much faster: under
#: that, two shapes are the same within the noise of a short trial, and the default is kept.
MIN_GAIN = 1.03
#: Rounds in which every candidate is timed in turn (each for budget_s / ROUNDS).
ROUNDS = 3


def level_of(working_set_bytes: int, levels: list) -> str:
    """The smallest level whose capacity holds the working set (`dram` past the last cache)."""
    for lv in levels:
        if lv.capacity_bytes and working_set_bytes <= lv.capacity_bytes:
            return lv.name
    return "dram"


@dataclass
class Tuner:
    """Chooses, once per (dtype, loop, level), the shape of a streaming loop by measuring each."""

    backend: Any
    levels: list  # the backend's cache levels (hierarchy.Level), smallest first
    budget_s: float = 0.1  # per candidate
    min_reps: int = 3
    max_reps: int = 20
    chosen: dict = field(default_factory=dict)
    trials: list = field(default_factory=list)

    def kernel(self, buf: SweepBuffers, variant: str, elements: int, passes: int = 1):
        """The shape to launch `variant`'s streaming loop with on this working set (None: the
        backend has one); the first call for a level measures the candidates."""
        ws = elements * ITEMSIZE[buf.dtype] * (2 if variant == "rw" else 1)
        key = (buf.dtype, variant, level_of(ws, self.levels))
        if key in self.chosen:
            return self.chosen[key]
        cands = self.backend.kernel_variants(variant, ws)
        if len(cands) <= 1:
            self.chosen[key] = cands[0] if cands else None
            return self.chosen[key]
        launches = [self.backend.sweep_launch(buf, 0, variant, elements, passes, kernel=k) for k in cands]
        times: list[list[float]] = [[] for _ in cands]
        valid = [True] * len(cands)
        for rnd in range(ROUNDS):  # candidates in turn, round after round: a burst of noise hits all
            for i, (k, launch) in enumerate(zip(cands, launches)):
                if not valid[i]:
                    continue
                buf.partial[...] = np.nan
                if variant == "rw":
                    buf.out[:elements] = np.nan
                win = quiet_window(lambda: self.backend.time(launch.run, warmup=1, min_reps=self.min_reps,
                                                             max_reps=self.max_reps, budget_s=self.budget_s / ROUNDS),
                                   f"the trial of {k.name}", retries=1)  # a busy burst is timed again
                times[i] += list(win.result)
                if rnd == 0:  # a shape's result is right or wrong the same way every time
                    err = check(self.backend, buf, variant, 0, elements, launch.partial_elements, passes)
                    valid[i] = err <= TOLERANCE[(variant, buf.dtype)]
        _, nbytes = counts(buf.dtype, variant, 0, elements, launches[0].partial_elements,
                           launches[0].partial_itemsize, passes)
        # the best repetitions, as the ceilings take them: contention only slows one down
        rates = {k.name: float(np.percentile(nbytes / np.asarray(t), 90)) if ok else None
                 for k, t, ok in zip(cands, times, valid)}
        default = cands[0]
        best = max((k for k in cands if rates[k.name]), key=lambda k: rates[k.name], default=default)
        base = rates[default.name]
        if base and rates.get(best.name) and rates[best.name] < MIN_GAIN * base:
            best = default
        why = ("the register file's own shape" if best == default and base
               else "the default shape failed its check" if not base
               else f"{rates[best.name] / base:.2f}x the default shape's bandwidth")
        self.chosen[key] = best
        self.trials.append({"dtype": key[0], "loop": variant, "level": key[2], "working_set_bytes": ws,
                            "chosen": best.name, "why": why, "candidates_Bps": rates,
                            "statistic": "p90 of the repetitions"})
        return best

    def known(self, dtype: str, variant: str, working_set_bytes: int):
        """The shape already chosen for this level, None when none was (points with FMAs never
        start a trial: their loop keeps the register file's width and chains)."""
        return self.chosen.get((dtype, variant, level_of(working_set_bytes, self.levels)))
