"""The roofline model: ceilings, attainable performance, ridge points, placement and prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Roofline:
    """Measured ceilings: bandwidth in B/s per memory level, compute in FLOP/s per unit.

    A compute unit is a dtype for vector FMA math ("float32") or "<dtype>-matrix" for matrix units.
    """

    bandwidth: dict[str, float]
    compute: dict[str, float]

    def _bw(self, level: str) -> float:
        if level not in self.bandwidth:
            raise KeyError(f"no {level!r} bandwidth ceiling (have {sorted(self.bandwidth)})")
        return self.bandwidth[level]

    def _peak(self, unit: str) -> float:
        if unit not in self.compute:
            raise KeyError(f"no {unit!r} compute ceiling (have {sorted(self.compute)})")
        return self.compute[unit]

    def attainable(self, intensity: float, unit: str, level: str = "dram") -> float:
        """min(compute ceiling, bandwidth × intensity) in FLOP/s."""
        return min(self._peak(unit), self._bw(level) * intensity)

    def ridge(self, unit: str, level: str = "dram") -> float:
        """Intensity (FLOP/byte) where the bandwidth slope meets the compute roof."""
        return self._peak(unit) / self._bw(level)

    def predicted_time(self, flops: float, nbytes: float, unit: str, level: str = "dram") -> float:
        """max(FLOPs / compute ceiling, bytes / bandwidth ceiling) in seconds."""
        return max(flops / self._peak(unit), nbytes / self._bw(level))

    def bound(self, intensity: float, unit: str, level: str = "dram") -> str:
        return "memory" if intensity < self.ridge(unit, level) else "compute"

    def to_dict(self) -> dict:
        return {"bandwidth": dict(self.bandwidth), "compute": dict(self.compute)}

    @classmethod
    def from_dict(cls, d: dict) -> "Roofline":
        return cls(bandwidth={k: float(v) for k, v in d["bandwidth"].items() if v is not None},
                   compute={k: float(v) for k, v in d["compute"].items() if v is not None})


@dataclass(frozen=True)
class Placement:
    """Where one measured kernel stands against a roofline."""

    flops: float
    bytes: float
    time_s: float
    unit: str
    level: str
    intensity: float
    achieved_flops: float
    achieved_bandwidth_Bps: float
    attainable_flops: float
    efficiency: float
    predicted_time_s: float
    measured_over_predicted: float
    bound: str
    above_roof: bool
    notes: list[str] = field(default_factory=list)


def place(roof: Roofline, flops: float, nbytes: float, time_s: float, unit: str, level: str = "dram",
          noise: float = 0.05) -> Placement:
    """Place a kernel that did `flops` and moved `nbytes` in `time_s`.

    A point more than `noise` (relative) above its roof is flagged: above the DRAM slope it usually
    means the data came from a cache (reuse), above a compute roof a counting error.
    """
    if time_s <= 0 or nbytes <= 0:
        raise ValueError(f"time_s and bytes must be positive (got {time_s}, {nbytes})")
    intensity = flops / nbytes
    achieved = flops / time_s
    attainable = roof.attainable(intensity, unit, level)
    predicted = roof.predicted_time(flops, nbytes, unit, level)
    bound = roof.bound(intensity, unit, level)
    eff = achieved / attainable if attainable > 0 else math.nan
    above = predicted > time_s * (1 + noise)
    notes = []
    if above:
        if bound == "memory":
            notes.append(f"above the {level} bandwidth roof: data reused from a cache closer than {level}")
        else:
            notes.append(f"above the {unit} compute roof: the FLOP count is too high or the unit is wrong")
    return Placement(flops=flops, bytes=nbytes, time_s=time_s, unit=unit, level=level,
                     intensity=intensity, achieved_flops=achieved, achieved_bandwidth_Bps=nbytes / time_s,
                     attainable_flops=attainable, efficiency=eff, predicted_time_s=predicted,
                     measured_over_predicted=time_s / predicted, bound=bound, above_roof=above,
                     notes=notes)
