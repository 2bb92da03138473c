"""Timing and memory harness: our path and the reference path of a stage, interleaved in one process.

Every comparison runs both paths once untimed (warm-up, peak memory, outputs for the equality check),
then `reps` timed repetitions that rotate the order (reference first, then ours first, ...), so a
slow phase of a shared machine hits both paths alike. Medians are reported, never means.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _heap_reader():
    """Bytes in use by malloc (glibc mallinfo2, all arenas plus mmapped blocks), else the resident set size.

    torch's CPU tensors come from malloc, so this follows live tensors; unlike RSS it does not credit memory
    that an earlier run freed and the allocator kept, which would favour whichever path runs second.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                             "fsmblks", "uordblks", "fordblks", "keepcost")]

        libc.mallinfo2.restype = MallInfo2

        def heap() -> int:
            info = libc.mallinfo2()
            return info.uordblks + info.hblkhd

        heap()
        return heap, "malloc in use (mallinfo2)"
    except (OSError, AttributeError):
        return _rss_bytes, "resident set size"


HEAP_BYTES, CPU_MEMORY_KIND = _heap_reader()


class PeakMemory:
    """Peak memory of a block in MiB above its start: CUDA max_memory_allocated on GPU; on CPU the bytes in use
    by malloc (or the RSS where mallinfo2 is missing), sampled every 2 ms by a thread."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = HEAP_BYTES()
        self._peak = self._start
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, HEAP_BYTES())
                self._stop.wait(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return False
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, HEAP_BYTES())
        self.peak_mb = (self._peak - self._start) / 2**20
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measured:
    """Returned by a path that times part of its own work (e.g. to charge a one-time cost differently):
    `seconds` replaces the call's wall time."""

    seconds: float
    output: Any = None


def _unpack(out: Any, elapsed: float) -> tuple[Any, float]:
    return (out.output, out.seconds) if isinstance(out, Measured) else (out, elapsed)


@dataclass
class Comparison:
    ours_s: list[float] = field(default_factory=list)
    reference_s: list[float] = field(default_factory=list)
    ours_mb: float = 0.0
    reference_mb: float = 0.0
    ours_out: Any = None
    reference_out: Any = None
    floor_s: list[float] = field(default_factory=list)

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours_s)

    @property
    def reference_median(self) -> float:
        return statistics.median(self.reference_s)

    @property
    def speedup(self) -> float:
        return self.reference_median / self.ours_median

    @property
    def rep_speedups(self) -> list[float]:
        """Reference time over our time within each repetition (the two ran back to back)."""
        return [r / o for o, r in zip(self.ours_s, self.reference_s)]


def compare(ours: Callable[[], Any], reference: Callable[[], Any], reps: int, device: torch.device,
            per: float = 1.0, warmup: bool = True, floor: Callable[[], Any] | None = None) -> Comparison:
    """Time `ours` against `reference` interleaved; times are divided by `per` (e.g. steps or images).

    The untimed first call of each path measures peak memory and keeps its output for the equality
    check; with warmup=False that first call is also the first timed repetition (for slow real-size work).
    `floor`, the model compute alone, joins the rotation when given (Comparison.floor_s).
    """
    result = Comparison()
    paths = [("ours", ours), ("reference", reference)] + ([("floor", floor)] if floor else [])
    for name, fn in paths:
        with PeakMemory(device) as memory:
            started = time.perf_counter()
            out = fn()
            _sync(device)
            out, elapsed = _unpack(out, time.perf_counter() - started)
        if name != "floor":
            setattr(result, f"{name}_mb", memory.peak_mb)
            setattr(result, f"{name}_out", out)
        if not warmup:
            getattr(result, f"{name}_s").append(elapsed / per)
    for rep in range(reps - (0 if warmup else 1)):
        turn = (rep + 1) % len(paths)  # reference first, then rotate
        order = paths[turn:] + paths[:turn]
        for name, fn in order:
            _sync(device)
            started = time.perf_counter()
            out = fn()
            _sync(device)
            _, elapsed = _unpack(out, time.perf_counter() - started)
            getattr(result, f"{name}_s").append(elapsed / per)
    return result


def time_once(fn: Callable[[], Any], reps: int, device: torch.device) -> tuple[list[float], Any]:
    """Median-able wall times of a path with no reference (e.g. DAG planning)."""
    times, out = [], None
    for _ in range(reps):
        _sync(device)
        started = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return times, out


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu_memory_measure": CPU_MEMORY_KIND, "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu})"}
    try:
        import diffusers
        import open_clip
        import peft
        import transformers

        info.update(diffusers=diffusers.__version__, transformers=transformers.__version__, peft=peft.__version__,
                    open_clip=open_clip.__version__)
    except ImportError:
        pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def quiet_libraries() -> None:
    """Silence the warnings, logs and progress bars of the model libraries, so the table stays readable."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("datadream").setLevel(logging.WARNING)
    for noisy in ("diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlogging

        dlogging.set_verbosity_error()
        dlogging.disable_progress_bar()
        from transformers.utils import logging as tlogging

        tlogging.set_verbosity_error()
        tlogging.disable_progress_bar()
    except ImportError:
        pass


def _rate_unit(unit: str) -> str:
    """'s/step' -> 'step/s'."""
    return unit.removeprefix("s/") + "/s" if unit.startswith("s/") else f"1/{unit}"


def format_table(rows: list[dict], rates: bool = False) -> str:
    """Medians in seconds per unit, or with `rates` units per second (steps/s, images/s) and, where a row has
    one, its speedup against the released code as it shipped (`speedup_vs_released`)."""
    if rates:
        header = ("stage", "ours", "reference", "speedup", "vs released as shipped", "peak MiB ours / ref",
                  "outputs equal")
    else:
        header = ("stage", "ours median s", "reference median s", "speedup", "peak MiB ours / ref", "outputs equal")
    lines = []
    for row in rows:
        ours = row.get("ours_median_s")
        ref = row.get("reference_median_s")
        speedup = row.get("speedup")
        memory = row.get("peak_mb") or {}
        mem = (f"{memory['ours']:.0f} / {memory['reference']:.0f}" if "reference" in memory
               else f"{memory['ours']:.0f}" if "ours" in memory else "-")
        bound = row.get("memory_bound")
        if bound:  # the most ours may hold: the reference's peak plus one copy of the weights the adapters change
            mem += f" (<= {bound['bound_mb']:.0f}: {'yes' if bound['within'] else 'NO'})"
        unit = row.get("unit")
        if rates:
            unit = unit and _rate_unit(unit)
            ours, ref = (None if value is None else 1.0 / value for value in (ours, ref))
        cells = [row["stage"] + (f" [{unit}]" if unit else ""), "-" if ours is None else f"{ours:.4g}",
                 "-" if ref is None else f"{ref:.4g}", "-" if speedup is None else f"{speedup:.2f}x"]
        if rates:
            released = row.get("speedup_vs_released")
            cells.append("-" if released is None else f"{released:.2f}x")
        lines.append((*cells, mem, row.get("equal_text", "-")))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines)])
