"""`gpuroof info`: the devices found, their backend and theoretical peaks, before anything is measured."""
from __future__ import annotations

import argparse
from typing import Any

from gpuroof.output import emit_json
from gpuroof.units import si


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof info` on the CLI's subparsers."""
    p = sub.add_parser("info", parents=[common], help="devices found, backend, theoretical peaks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.backends import device_count, get_backend, resolve_name

    name = resolve_name(args.backend)
    devices = []
    for i in range(device_count(name)):
        b = get_backend(name, i)
        try:
            max_sm, max_mem = b.max_clocks()
            info = b.device_info()
            clock, clock_source = max_sm, "max clock"
            if not max_sm and info.get("nominal_clock_mhz"):  # a VM has no cpufreq: the clock /proc/cpuinfo shows
                clock, clock_source = info["nominal_clock_mhz"], "nominal clock from /proc/cpuinfo, not measured"
            devices.append({"device": info, "dtypes": list(b.dtypes()),
                            "theoretical_at_max_clock": b.theoretical(clock, max_mem) if (clock or max_mem) else None,
                            "theoretical_clock_source": clock_source if clock else None,
                            "max_clocks_mhz": {"sm": max_sm, "mem": max_mem}})
        finally:
            b.close()
    out = {"backend": name, "devices": devices}
    if args.json:
        emit_json(out)
        return 0
    print(f"backend: {name}")
    for d in devices:
        for line in device_lines(name, d):
            print(line)
    return 0


def device_lines(backend: str, d: dict) -> list[str]:
    """`gpuroof info` for one device, in its own words: cores, ISA and caches on a CPU; SMs on a GPU."""
    dev, clocks = d["device"], d["max_clocks_mhz"]
    lines = [f"device {dev.get('index', 0)}: {dev['name']}"]
    if backend == "cpu":
        lines.append(f"  cores: {dev.get('physical_cores') or '?'} physical, {dev.get('logical_cpus') or '?'} logical, "
                     f"{dev.get('cores_used') or '?'} used")
        vec = dev.get("vector_unit") or {}
        lines.append(f"  ISA: {', '.join(dev.get('isa') or []) or '-'}"
                     + (f"; vector unit {vec['width_bits']} bit x {vec['fma_pipes']} FMA pipes" if vec else ""))
        caches = [f"L{c.get('level')} {c.get('type', '')} {c.get('size_bytes', 0) // 1024} KiB"
                  + (f" per {c['shared_by_cpus']} CPUs" if c.get("shared_by_cpus", 1) > 1 else " per core")
                  for c in dev.get("caches") or [] if isinstance(c, dict)]
        lines.append(f"  caches: {'; '.join(caches) or '-'}")
        lines.append(f"  clock: max {clocks['sm'] or '-'} MHz, nominal {dev.get('nominal_clock_mhz') or '-'} MHz")
    else:
        if dev.get("multiprocessors"):
            lines.append(f"  SMs: {dev['multiprocessors']}")
        lines.append(f"  max clocks: SM {clocks['sm'] or '-'} MHz, memory {clocks['mem'] or '-'} MHz")
    lines.append(f"  dtypes: {', '.join(d['dtypes'])}")
    theo = d["theoretical_at_max_clock"]
    if theo:
        lines.append(f"  theoretical peaks (at the {d['theoretical_clock_source']}):")
        for dt, v in theo["compute"].items():
            lines.append(f"    {dt}: {si(v, 'FLOP/s')}")
        if (theo.get("bandwidth") or {}).get("dram"):
            lines.append(f"    dram: {si(theo['bandwidth']['dram'], 'B/s')}")
    else:
        lines.append("  theoretical peaks: unknown (no clock reported)")
    return lines
