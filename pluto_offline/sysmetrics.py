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
``sys/ib.<dev>.<port>.rcv_bytes``, ``.xmit_bytes``     bytes since the port's counters were
                                                       cleared (sysfs ``port_rcv_data`` and
                                                       ``port_xmit_data``, counted in 4-byte words)
``sys/ib.<dev>.<port>.rcv_packets``, ``.xmit_packets`` packets (``port_rcv_packets``,
                                                       ``port_xmit_packets``)
``sys/ib.<dev>.<port>.<counter>.rate``                 bytes/s or packets/s, as the network rates
``sys/gpu.<i>.<name>.utilization``                     percent (NVML), with ``nvidia-ml-py``
``sys/gpu.<i>.<name>.memory.used`` / ``.utilization``  bytes / percent
``sys/gpu.<i>.<name>.power``                           milliwatts
=====================================================  ==========================================

InfiniBand series come from ``/sys/class/infiniband/<dev>/ports/<port>/counters/`` (the root is
``sysinfo.INFINIBAND_ROOT``, which tests point elsewhere): none where there is no such directory.
A device or GPU name goes into a series name as the stock SDK puts it there (GPU names lower
case, spaces and hyphens as ``_``; the stock renames ``pct``, ``net``, ``mem``, ``recv`` as whole
words). When NVML is installed but cannot start, there are no GPU series and one warning per
process (none when the driver's library is missing, as the stock SDK).

Every ``interval`` seconds (the stock ``x_sys_sampling_interval`` setting, default 4) the thread
samples and hands one record to the run's spill, as ``log()`` would, at its own step (1, 2, ...
as the stock SDK counts samples), never touching the step of the job's own ``log()`` calls. Off
with ``settings={"disable_system_metrics": True}`` (stock name) or
``PLUTO_DISABLE_SYSTEM_METRICS=1``. The training thread never samples.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any

import psutil

from pluto_offline import lifecycle, sysinfo

logger = logging.getLogger("pluto_offline")
DEFAULT_INTERVAL_S = 4.0  # the stock SDK's x_sys_sampling_interval
_OFF = ("1", "true", "yes", "on")
# The stock SDK renames these whole words in every series name (pluto/api.py ABBR).
_STOCK_WORDS = {"pct": "percentage", "net": "network", "mem": "memory", "recv": "received",
                "bytes_": "bytes."}
_STOCK_WORD = re.compile(r"\b(" + "|".join(map(re.escape, _STOCK_WORDS)) + r")\b")
# (sysfs counter, series name, scale): the data counters count 4-byte words
_IB_COUNTERS = (("port_rcv_data", "rcv_bytes", 4), ("port_xmit_data", "xmit_bytes", 4),
                ("port_rcv_packets", "rcv_packets", 1), ("port_xmit_packets", "xmit_packets", 1))


def stock_name(name: str) -> str:
    """A series name with a device's name in it, as the stock SDK sends it."""
    return _STOCK_WORD.sub(lambda m: _STOCK_WORDS[m.group(0)], name)


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


def ib_counters() -> dict[str, float]:
    """The InfiniBand ports' counters, under their series names (none without InfiniBand)."""
    out: dict[str, float] = {}
    root = sysinfo.INFINIBAND_ROOT
    try:
        devices = sorted(os.listdir(root))
    except OSError:
        return out
    for dev in devices:
        try:
            ports = sorted(os.listdir(os.path.join(root, dev, "ports")))
        except OSError:
            continue
        for port in ports:
            where = os.path.join(root, dev, "ports", port, "counters")
            for counter, name, scale in _IB_COUNTERS:
                try:
                    with open(os.path.join(where, counter), "rb") as f:
                        value = int(f.read())
                except (OSError, ValueError):
                    continue
                out[stock_name(f"sys/ib.{dev}.{port}.{name}")] = float(value * scale)
    return out


class Gpus:
    """NVIDIA GPUs through NVML (``nvidia-ml-py``, the ``gpu`` extra); none without it."""

    warned = False  # once per process: NVML that cannot start

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[tuple[str, Any]] = []
        try:
            import pynvml
        except ImportError:
            return
        try:
            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                name = name.lower().replace(" ", "_").replace("-", "_")
                self.handles.append((stock_name(f"sys/gpu.{i}.{name}"), h))
            self.nvml = pynvml
        except Exception as exc:  # no driver, no GPU: no GPU series, the job goes on
            self.handles = []
            missing = getattr(pynvml, "NVMLError_LibraryNotFound", ())
            if not isinstance(exc, missing) and not Gpus.warned:
                Gpus.warned = True
                logger.warning("pluto_offline: no GPU metrics: NVML did not start: %s", exc)

    def sample(self, out: dict[str, float]) -> None:
        nv = self.nvml
        for prefix, h in self.handles:
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                out[f"{prefix}.utilization"] = util.gpu
                out[f"{prefix}.memory.used"] = mem.used
                out[f"{prefix}.memory.utilization"] = util.memory
                out[f"{prefix}.power"] = nv.nvmlDeviceGetPowerUsage(h)
            except Exception as exc:  # a GPU lost mid-run: its series stop, the rest go on
                logger.debug("pluto_offline: %s not sampled: %s", prefix, exc)


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
        counters.update(ib_counters())
        out.update(counters)
        if self._previous is not None:
            t0, before = self._previous
            dt = now - t0
            if dt > 0:
                for k, v in counters.items():
                    if k in before:  # a counter that went back (wrapped, reset) counts from 0
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
