"""torch.profiler's events matched to the recorded ops, one repetition at a time."""
from __future__ import annotations

from typing import Any


SPAN = "gpuroof.profile.rep"


def _start(e: Any) -> float:
    return e.time_range.start


def _roots(span: Any, tops: list) -> list:
    """The events of one repetition, in time order: the span's children, and the top-level events
    of other threads inside it (the autograd engine runs a GPU's backward on its own thread)."""
    inside = [e for e in tops if e is not span and e.name != SPAN and e.thread != span.thread
              and span.time_range.start <= e.time_range.start <= span.time_range.end
              and str(getattr(e, "device_type", "CPU")).endswith("CPU")]  # host events, not kernels
    return sorted([*span.cpu_children, *inside], key=_start)


def _preorder(roots: list) -> tuple[list, list[int]]:
    """Events in pre-order (time order among siblings) and, for each, the index just past its subtree."""
    order: list = []
    ends: list[int] = []

    def visit(e: Any) -> None:
        k = len(order)
        order.append(e)
        ends.append(0)
        for c in sorted(e.cpu_children, key=_start):
            visit(c)
        ends[k] = len(order)

    for r in roots:
        visit(r)
    return order, ends


#: How many of the following ops a search for one op may not run past (see `match`).
LOOKAHEAD = 8


def same_op(name: str) -> str:
    """The name an op is matched by: an in-place op and its out-of-place twin alike. The autograd
    engine sums two gradients of one tensor in place when nothing else holds the first, out of place
    otherwise, and the recording's dispatcher mode holds references the profiled run does not."""
    return name.rstrip("_")


def match(ops: list[str], roots: list, views: list[bool] | None = None) -> list:
    """The profiler event of each recorded op, in order: a pre-order walk that takes the first event
    of the op's name and skips its subtree (the kernels it called), and walks into events that are
    not the op (composite ops such as aten::linear, whose parts the dispatcher recorded; the autograd
    engine's evaluate_function and node events, whose ops the backward recorded). An op the
    profiler records no event for (aten::detach inside an RNN) gets None: its search gives up at the
    first event named as one of the next ops that move data, so it consumes nothing. Views
    (`views[i]`) do not stop a search: they are the ops the profiler most often names otherwise
    or leaves out (detach_ after lift_fresh), and one matched out of place costs no time.
    Names compare by `same_op`."""
    order, ends = _preorder(roots)
    names = [same_op(e.name) for e in order]
    keys = [same_op(op) for op in ops]
    movers = [i for i, v in enumerate(views or [False] * len(keys)) if not v]
    found: list = [None] * len(ops)
    pos = 0
    nxt = 0  # index into movers of the first data-moving op after the current one
    for i, op in enumerate(keys):
        while nxt < len(movers) and movers[nxt] <= i:
            nxt += 1
        ahead = {keys[j] for j in movers[nxt:nxt + LOOKAHEAD]} - {op}
        k = pos
        while k < len(order):
            name = names[k]
            if name == op:
                found[i] = order[k]
                pos = ends[k]
                break
            if name in ahead:
                break
            k += 1
    return found


def widen(found: list) -> list:
    """Each matched event replaced by its highest ancestor that holds no other matched event (below
    the repetition's span): aten::conv2d for its aten::convolution, the autograd node for its one
    kernel op. The wrapper's own dispatch time then belongs to the op it wraps, and the ops add up to
    the profiled time; a wrapper of several ops (aten::linear: t and addmm) keeps its own time."""
    count: dict[int, int] = {}
    for e in found:
        p = e.cpu_parent if e is not None else None
        while p is not None and p.name != SPAN:
            count[id(p)] = count.get(id(p), 0) + 1
            p = p.cpu_parent
    out = []
    for e in found:
        while e is not None and e.cpu_parent is not None and e.cpu_parent.name != SPAN \
                and count.get(id(e.cpu_parent)) == 1:
            e = e.cpu_parent
        out.append(e)
    return out


def _event_time(e: Any, gpu: bool) -> float:
    """Seconds: device (kernel) time on CUDA, CPU time on a CPU."""
    return (e.device_time_total if gpu else e.cpu_time_total) * 1e-6

