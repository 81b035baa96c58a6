"""Kernel shapes tried on the machine itself: the fastest streaming loop per level, kept and recorded.

A loop shape tuned on one core is wrong on the next (Zen 5 reads its L2 at half speed with the zmm
loop that suits Emerald Rapids, and at full speed with ymm), and a hand-written kernel per ISA, as
likwid-bench has, cannot know that. So before a level is measured, each candidate shape the backend
offers (`Backend.kernel_variants`) is launched on that level's working set and timed for a short
budget, in rounds; the fastest is checked against the closed form (and the default, which it must
beat), a shape that fails is dropped for the next, and the one kept serves every point of that
level. The trial is written to run.json (device.kernel_shape.tuned) with every candidate's rate and
which shapes were checked.

A level's choice serves every dtype: the streaming loop moves the same bytes in the same vector
loads and stores whatever the element type. And it is kept between runs (ChoiceCache), in the
user's cache directory, under the device's fingerprint and the versions of gpuroof and its code
generator: a later run of the same device takes it, says so in its trial record, and still
checks every point it times; a changed device, ISA or version, or `--retune`, measures again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
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
#: After the first round, only the default shape and the candidates within this fraction of the
#: fastest one are timed again: a shape this far behind cannot win by MIN_GAIN in two more rounds
#: unless the first round's window was disturbed, and a disturbed window is timed again anyway.
PRUNE = 0.85


#: Where the tuner's choices are kept between runs (default: the user's cache directory).
CACHE_ENV = "GPUROOF_CACHE_DIR"
#: Keys of a device's description that change between runs of the same device (a clock, free memory).
VOLATILE = ("clock", "memory", "free", "power", "temp", "tuned", "index")


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("gpuroof"))


def fingerprint(backend_name: str, device: dict, versions: dict) -> dict:
    """What a kept choice is valid for: the device as described (its volatile readings left out,
    nested too), the backend, and the versions of gpuroof (with its git commit) and the compilers."""
    def stable(d: dict) -> dict:
        return {k: (stable(v) if isinstance(v, dict) else v) for k, v in d.items()
                if not any(w in k for w in VOLATILE)}
    return {"backend": backend_name, "device": stable(device),
            "versions": {k: versions.get(k) for k in ("gpuroof", "git_commit", "numba", "llvmlite", "cupy",
                                                      "cupy-cuda12x", "cupy-cuda13x", "cuda_toolkit")
                         if versions.get(k) is not None}}


@dataclass
class ChoiceCache:
    """The tuner's choices for one fingerprint, one JSON file per fingerprint, written atomically."""

    path: Path
    fingerprint: dict
    choices: dict = field(default_factory=dict)  # "loop level" -> the trial record that chose

    @classmethod
    def open(cls, fp: dict, directory: Path | None = None, retune: bool = False) -> "ChoiceCache":
        text = json.dumps(fp, sort_keys=True, default=str)
        path = (directory or cache_dir()) / "tuning" / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
        cache = cls(path, json.loads(text))
        if not retune:
            try:
                doc = json.loads(path.read_text())
                if doc.get("fingerprint") == cache.fingerprint:
                    cache.choices = dict(doc.get("choices") or {})
            except (OSError, ValueError):
                pass  # none yet, or unreadable: measured again and written anew
        return cache

    def get(self, loop: str, level: str) -> dict | None:
        return self.choices.get(f"{loop} {level}")

    def put(self, loop: str, level: str, trial: dict) -> None:
        self.choices[f"{loop} {level}"] = {**trial, "created_utc": datetime.now(timezone.utc).isoformat()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tuning-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump({"fingerprint": self.fingerprint, "choices": self.choices}, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:  # a read-only home: the run still has its choice, the next one measures again
            pass


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
    cache: ChoiceCache | None = None  # choices kept between runs; None: every level measured
    chosen: dict = field(default_factory=dict)
    trials: list = field(default_factory=list)

    def kernel(self, buf: SweepBuffers, variant: str, elements: int, passes: int = 1):
        """The shape to launch `variant`'s streaming loop with on this working set (None: the
        backend has one); the first call for a level measures the candidates."""
        ws = elements * ITEMSIZE[buf.dtype] * (2 if variant == "rw" else 1)
        key = (variant, level_of(ws, self.levels))
        if key in self.chosen:
            return self.chosen[key]
        cands = self.backend.kernel_variants(variant, ws)
        if len(cands) <= 1:
            self.chosen[key] = cands[0] if cands else None
            return self.chosen[key]
        kept_before = self.cache.get(*key) if self.cache is not None else None
        by_name = {k.name: k for k in cands}
        if kept_before and kept_before.get("chosen") in by_name:
            self.chosen[key] = by_name[kept_before["chosen"]]
            self.trials.append({**kept_before, "cached": True, "cache_file": str(self.cache.path)})
            return self.chosen[key]
        launches = [self.backend.sweep_launch(buf, 0, variant, elements, passes, kernel=k) for k in cands]
        times: list[list[float]] = [[] for _ in cands]
        kept = list(range(len(cands)))
        for rnd in range(ROUNDS):  # candidates in turn, round after round: a burst of noise hits all
            for i in kept:
                warmup = 1 if rnd == 0 and i == kept[0] else 0  # the level's first launch: the others find it warm
                win = quiet_window(lambda: self.backend.time(launches[i].run, warmup=warmup,
                                                             min_reps=self.min_reps, max_reps=self.max_reps,
                                                             budget_s=self.budget_s / ROUNDS),
                                   f"the trial of {cands[i].name}", retries=1)  # a busy burst is timed again
                times[i] += list(win.result)
            if rnd == 0:  # the later rounds only time the default and the shapes near the fastest
                first = [float(np.percentile(1 / np.asarray(t), 90)) for t in times]
                kept = [i for i in kept if i == 0 or first[i] >= PRUNE * max(first)]
        _, nbytes = counts(buf.dtype, variant, 0, elements, launches[0].partial_elements,
                           launches[0].partial_itemsize, passes)
        # the best repetitions, as the ceilings take them: contention only slows one down
        rate = [float(np.percentile(nbytes / np.asarray(t), 90)) for t in times]
        checked: dict[int, bool] = {}

        def valid(i: int) -> bool:  # one launch checked against the closed form, before its rate counts
            if i not in checked:
                self.backend.poison(buf, variant, elements)
                launches[i].run()
                err = check(self.backend, buf, variant, 0, elements, launches[i].partial_elements, passes,
                            launches[i].expected_sum)
                checked[i] = err <= TOLERANCE[(variant, buf.dtype)]
            return checked[i]

        # Only the shapes that decide are checked (a shape is right or wrong the same way every time):
        # the default, then the fastest others in turn until one is valid or none beats the default.
        base_ok = valid(0)
        best = 0
        for i in sorted(range(1, len(cands)), key=lambda i: -rate[i]):
            if base_ok and rate[i] < MIN_GAIN * rate[0]:
                break
            if valid(i):
                best = i
                break
        why = ("the register file's own shape" if best == 0 and base_ok
               else "the default shape failed its check" if not base_ok
               else f"{rate[best] / rate[0]:.2f}x the default shape's bandwidth")
        rates = {k.name: (None if checked.get(i) is False else rate[i]) for i, k in enumerate(cands)}
        best = cands[best]
        self.chosen[key] = best
        trial = {"dtype": buf.dtype, "loop": variant, "level": key[1], "working_set_bytes": ws,
                 "chosen": best.name, "why": why, "candidates_Bps": rates,
                 "rounds": {cands[i].name: ROUNDS if i in kept else 1 for i in range(len(cands))},
                 "checked": {cands[i].name: ok for i, ok in checked.items()},
                 "statistic": "p90 of the repetitions"}
        if self.cache is not None and checked.get(cands.index(best)):
            self.cache.put(variant, key[1], trial)  # only a choice that passed its check is kept
        self.trials.append({**trial, "cached": False})
        return best

    def known(self, dtype: str, variant: str, working_set_bytes: int):
        """The shape already chosen for this level (for any dtype), None when none was (points with
        FMAs never start a trial: their loop keeps the register file's width and chains)."""
        return self.chosen.get((variant, level_of(working_set_bytes, self.levels)))
