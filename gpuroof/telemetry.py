"""A sampler thread that records clocks, power, temperature and clock-event reasons during a run."""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import pandas as pd

from gpuroof.nvml import is_throttled

NUMERIC = ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c")


class Sampler:
    """Samples `source()` every `interval_s` on a daemon thread; times are seconds since start.

    Use as a context manager. `phase(name)` labels what the run is doing, so figures can shade it;
    `window(t0, t1)` summarizes the samples taken while one point was being timed.
    """

    def __init__(self, source: Callable[[], dict], interval_s: float = 0.05):
        self._source = source
        self.interval_s = interval_s
        self.rows: list[dict] = []
        self.phases: list[dict] = []
        self._phase = "setup"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="gpuroof-telemetry", daemon=True)
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def __enter__(self) -> "Sampler":
        self.t0 = time.perf_counter()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        self._close_phase()

    def _sample(self) -> None:
        try:
            row = dict(self._source())
        except Exception as e:  # a telemetry failure is recorded, never fatal
            row = {"error": str(e)}
        row["t_s"] = self.now()
        row["phase"] = self._phase
        with self._lock:
            self.rows.append(row)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _close_phase(self) -> None:
        if self.phases and self.phases[-1]["t_end_s"] is None:
            self.phases[-1]["t_end_s"] = self.now()

    def phase(self, name: str) -> None:
        with self._lock:
            self._close_phase()
            self.phases.append({"phase": name, "t_start_s": self.now(), "t_end_s": None})
            self._phase = name

    def window(self, t0: float, t1: float) -> dict:
        """Median of each numeric field over [t0, t1] (nearest sample if none fell inside), the OR of
        the clock-event reasons seen, whether any of them is a throttle reason, and where the power
        came from (`power_source`: nvml.POWER_SOURCES keys seen, joined by '+'; None without one)."""
        with self._lock:
            rows = list(self.rows)
        inside = [r for r in rows if t0 <= r["t_s"] <= t1]
        if not inside and rows:
            mid = 0.5 * (t0 + t1)
            inside = [min(rows, key=lambda r: abs(r["t_s"] - mid))]
        out: dict = {"telemetry_samples": len(inside)}
        for key in NUMERIC:
            vals = [r[key] for r in inside if r.get(key) is not None]
            out[key] = float(np.median(vals)) if vals else None
        masks = [r["clock_event_reasons"] for r in inside if r.get("clock_event_reasons") is not None]
        mask = int(np.bitwise_or.reduce(masks)) if masks else None
        out["clock_event_reasons"] = mask
        out["throttled"] = is_throttled(mask)
        sources = sorted({str(r["power_source"]) for r in inside if r.get("power_source")})
        out["power_source"] = "+".join(sources) if sources else None
        return out

    def frame(self) -> pd.DataFrame:
        with self._lock:
            return pd.DataFrame(self.rows)
