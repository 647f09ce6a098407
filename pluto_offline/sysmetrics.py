"""System metrics: a sampler thread journals the stock SDK's ``sys/`` series for a run.

Names and units are the stock SDK's (``pluto/sys.py`` ``System.monitor`` through
``pluto/api.py`` ``make_compat_monitor_v1``, pluto-ml 0.0.29), so dashboards built on stock
runs read pluto-offline runs unchanged:

=====================================================  ==========================================
``sys/cpu.percentage.<i>``                             percent busy of logical CPU ``i`` since the
                                                       last sample
``sys/memory.active``, ``sys/memory.used``             bytes (``psutil.virtual_memory``)
``sys/disk.used``                                      bytes used on the journal's filesystem
``sys/network.bytes_sent``, ``sys/network.bytes_recv`` bytes since boot (all interfaces)
``sys/network.bytes_sent.rate``, ``..bytes_recv.rate`` bytes/s since the last sample (from the
                                                       second sample on)
``sys/gpu.<i>.<name>.utilization``                     percent (NVML), with ``nvidia-ml-py``
``sys/gpu.<i>.<name>.memory.used`` / ``.utilization``  bytes / percent
``sys/gpu.<i>.<name>.power``                           milliwatts
=====================================================  ==========================================

Every ``interval`` seconds (the stock ``x_sys_sampling_interval`` setting, default 4) the thread
samples and hands one record to the run's spill, as ``log()`` would, at its own step (1, 2, ...
as the stock SDK counts samples), never touching the step of the job's own ``log()`` calls. Off
with ``settings={"disable_system_metrics": True}`` (stock name) or
``PLUTO_DISABLE_SYSTEM_METRICS=1``. The training thread never samples.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psutil

from pluto_offline import lifecycle

logger = logging.getLogger("pluto_offline")
DEFAULT_INTERVAL_S = 4.0  # the stock SDK's x_sys_sampling_interval
_OFF = ("1", "true", "yes", "on")


def enabled(settings: dict | None) -> bool:
    settings = settings or {}
    if "disable_system_metrics" in settings:
        return not settings["disable_system_metrics"]
    return os.environ.get("PLUTO_DISABLE_SYSTEM_METRICS", "").strip().lower() not in _OFF


def interval(settings: dict | None) -> float:
    value = (settings or {}).get("x_sys_sampling_interval", DEFAULT_INTERVAL_S)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


class Gpus:
    """NVIDIA GPUs through NVML (``nvidia-ml-py``, the ``gpu`` extra); none without it."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[tuple[int, str, Any]] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                self.handles.append((i, name.lower().replace(" ", "_").replace("-", "_"), h))
            self.nvml = pynvml
        except Exception:  # not installed, no driver, no GPU: no GPU series
            self.handles = []

    def sample(self, out: dict[str, float]) -> None:
        nv = self.nvml
        for i, name, h in self.handles:
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                out[f"sys/gpu.{i}.{name}.utilization"] = util.gpu
                out[f"sys/gpu.{i}.{name}.memory.used"] = mem.used
                out[f"sys/gpu.{i}.{name}.memory.utilization"] = util.memory
                out[f"sys/gpu.{i}.{name}.power"] = nv.nvmlDeviceGetPowerUsage(h)
            except Exception as exc:  # a GPU lost mid-run: its series stop, the rest go on
                logger.debug("pluto_offline: GPU %d not sampled: %s", i, exc)


class SystemSampler:
    """Samples the ``sys/`` series into a run every ``every`` seconds, on its own thread."""

    def __init__(self, run: Any, disk_path: str, every: float = DEFAULT_INTERVAL_S) -> None:
        self.run = run
        self.disk_path = disk_path
        self.every = every
        self.step = 0
        self._previous: tuple[float, dict[str, float]] | None = None
        self._stop = threading.Event()
        self._gpus: Gpus | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="pluto-offline-sysmetrics")

    def start(self) -> None:
        psutil.cpu_percent(percpu=True)  # the first call only sets the baseline
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> dict[str, float]:
        """One sample of every series (the stock names), as numbers."""
        now = time.monotonic()
        out: dict[str, float] = {
            f"sys/cpu.percentage.{i}": v for i, v in enumerate(psutil.cpu_percent(percpu=True))}
        mem = psutil.virtual_memory()
        out["sys/memory.active"] = getattr(mem, "active", mem.used)
        out["sys/memory.used"] = mem.used
        try:
            out["sys/disk.used"] = psutil.disk_usage(self.disk_path).used
        except OSError:
            pass
        net = psutil.net_io_counters()
        counters = {"sys/network.bytes_sent": float(net.bytes_sent),
                    "sys/network.bytes_recv": float(net.bytes_recv)}
        out.update(counters)
        if self._previous is not None:
            t0, before = self._previous
            dt = now - t0
            if dt > 0:
                for k, v in counters.items():
                    # a counter that went back (wrapped, reset) counts from zero
                    out[f"{k}.rate"] = (v - before[k] if v >= before[k] else v) / dt
        self._previous = (now, counters)
        if self._gpus is None:
            self._gpus = Gpus()  # on this thread: NVML's start never delays init()
        self._gpus.sample(out)
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if self.run._ended:
                return
            try:
                data = self.sample()
                self.step += 1
                t = time.time_ns() // 1_000_000
                with self.run._append_lock:  # as log(): the spill's write position
                    self.run._log_slow(data, self.step, t)
            except Exception as exc:  # never let sampling disturb the job
                if not self.run._ended:
                    logger.debug("pluto_offline: system metrics not sampled: %s", exc)


_samplers: dict[int, SystemSampler] = {}


def attach(run: Any, journal_dir: str, settings: dict | None) -> None:
    """Start sampling for ``run`` unless system metrics are off."""
    if not enabled(settings):
        return
    sampler = SystemSampler(run, journal_dir, interval(settings))
    _samplers[id(run)] = sampler
    if detach not in lifecycle.on_forget:
        lifecycle.on_forget.append(detach)
    sampler.start()


def detach(run: Any) -> None:
    sampler = _samplers.pop(id(run), None)
    if sampler is not None:
        sampler.stop()
