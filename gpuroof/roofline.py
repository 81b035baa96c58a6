"""The roofline model: ceilings, attainable performance, ridge points, placement and prediction."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from gpuroof.errors import UsageError


def _check_rates(what: str, rates: object, unit: str) -> None:
    """UsageError unless `rates` maps names to finite numbers > 0 (a ceiling of 0, below 0 or NaN
    would make every placement against it meaningless)."""
    if not isinstance(rates, dict):
        raise UsageError(f"Roofline {what}={rates!r}: a dict of name -> {unit}")
    for k, v in rates.items():
        if not isinstance(k, str) or not k:
            raise UsageError(f"Roofline {what}: key {k!r}: a non-empty name")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            raise UsageError(f"Roofline {what}[{k!r}]={v!r}: a finite number > 0 ({unit})")


@dataclass(frozen=True)
class Roofline:
    """Measured ceilings: bandwidth in B/s per memory level, compute in FLOP/s per unit.

    A compute unit is a dtype for vector FMA math ("float32") or "<dtype>-matrix" for matrix units.
    """

    bandwidth: dict[str, float]
    compute: dict[str, float]

    def __post_init__(self) -> None:
        _check_rates("bandwidth", self.bandwidth, "B/s")
        _check_rates("compute", self.compute, "FLOP/s")

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

    def reference_level(self) -> str | None:
        """The level ridge points are taken against: DRAM, or the slowest level the roofline has."""
        bw = self.bandwidth
        return "dram" if "dram" in bw else (min(bw, key=bw.get) if bw else None)

    def ridges(self, level: str | None = None) -> dict[str, float]:
        """Ridge intensity of every compute unit against `level` (default: reference_level); {} when
        the roofline has no such level."""
        level = level or self.reference_level()
        return {u: self.ridge(u, level) for u in self.compute} if level in self.bandwidth else {}

    def to_dict(self) -> dict:
        return {"bandwidth": dict(self.bandwidth), "compute": dict(self.compute)}

    @classmethod
    def from_dict(cls, d: dict) -> "Roofline":
        if not isinstance(d, dict) or not all(isinstance(d.get(k), dict) for k in ("bandwidth", "compute")):
            raise UsageError(f"ceilings {str(d)[:60]!r}: an object with 'bandwidth' and 'compute' maps")
        for kind in ("bandwidth", "compute"):
            for k, v in d[kind].items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                    raise UsageError(f"ceilings {kind}[{k!r}]={v!r}: a finite number > 0, or null")
        return cls(bandwidth={k: float(v) for k, v in d["bandwidth"].items() if v is not None},
                   compute={k: float(v) for k, v in d["compute"].items() if v is not None})


def finite_rates(rates: dict | None) -> dict[str, float]:
    """The entries of a {name: rate} map that are finite numbers > 0 (a null, a NaN, a boolean or
    a text that is no number left out)."""
    out = {}
    for k, v in (rates or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if not isinstance(v, bool) and math.isfinite(f) and f > 0:
            out[str(k)] = f
    return out


def known(ceilings: dict | None) -> Roofline:
    """The roofline of a ceilings map as run.json holds it (measured or theoretical): every finite
    positive entry; a null, missing or unknown one is left out (a theoretical bandwidth nobody
    publishes, a unit that failed)."""
    c = ceilings or {}
    return Roofline(bandwidth=finite_rates(c.get("bandwidth")), compute=finite_rates(c.get("compute")))


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
