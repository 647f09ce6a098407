"""The facts the stock SDK sends as a run's ``systemMetadata``, gathered at ``init()`` offline.

Shape as the stock SDK's ``System.get_info`` (``pluto/sys.py``, pluto-ml 0.0.29), the keys a
reader of stock runs knows: ``process`` (``pid``, ``exe``, ``cmdline``), ``platform`` (uname),
``timezone``, ``cpu`` (``physical``, ``virtual``, ``freq``: MHz), ``memory`` (``virt``,
``swap``: bytes), ``boot_time`` (epoch s), ``requirements`` (``name==version``), ``os_info``
(``hostname``, ``os``, ``kernel``, ``python``, ``glibc``), ``nccl`` (``nccl_env``, credential-like
values masked), ``gpu.nvidia`` (``count``, ``driver``, ``devices``: with ``nvidia-ml-py``) and
``git`` (``root``, ``branch``, ``commit``, ``dirty``, ``url``). Journaled in the ``create`` event
(``system``) and sent in the create's ``systemMetadata`` beside plutosync's own keys.

Cheap by design (a few ms): installed packages are read from the ``*.dist-info`` directory
names on ``sys.path`` (no metadata file is opened); git is asked with ``git`` commands bounded by
``GIT_TIMEOUT_S`` each; nothing opens a socket; the environment is never included (only NCCL's
variables, masked as the stock SDK masks them).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from typing import Any

import psutil

GIT_TIMEOUT_S = 2.0
_NCCL_PREFIXES = ("NCCL_", "TORCH_NCCL_", "FI_", "OFI_", "UCX_")
_NCCL_KEYS = ("TORCH_DISTRIBUTED_DEBUG", "TORCH_CPP_LOG_LEVEL", "TORCH_SHOW_CPP_STACKTRACES",
              "GLOO_SOCKET_IFNAME")
_MASKED = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "CREDENTIAL",
           "PRIVATE_KEY", "ACCESS_KEY")
_DIST = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(?:-py[\d.]+)?\.(?:dist|egg)-info$")
_requirements: list[str] | None = None  # per process: sys.path rarely changes


def system_metadata(cwd: str | None = None) -> dict[str, Any]:
    """The stock ``systemMetadata`` facts of this process and host (never raises)."""
    out: dict[str, Any] = {}
    for key, part in (("process", _process), ("platform", lambda: platform.uname()._asdict()),
                      ("timezone", lambda: list(time.tzname)), ("cpu", _cpu),
                      ("memory", _memory), ("boot_time", psutil.boot_time),
                      ("requirements", requirements), ("os_info", _os_info), ("nccl", _nccl),
                      ("gpu", _gpu), ("git", lambda: _git(cwd or os.getcwd()))):
        try:
            value = part()
        except Exception:  # a fact that cannot be read is left out, never the run
            continue
        if value or value == 0:
            out[key] = value
    return out


def requirements() -> list[str]:
    """``name==version`` of the installed distributions, from their metadata directories."""
    global _requirements
    if _requirements is None:
        found: dict[str, str] = {}
        for entry in sys.path:
            try:
                names = os.listdir(entry or ".")
            except OSError:
                continue
            for name in names:
                m = _DIST.match(name)
                if m:
                    found.setdefault(m["name"].replace("_", "-"), m["version"])
        _requirements = [f"{n}=={v}" for n, v in sorted(found.items(), key=lambda x: x[0].lower())]
    return list(_requirements)


def _process() -> dict[str, Any]:
    return {"pid": os.getpid(), "exe": sys.executable, "cmdline": list(sys.argv)}


def _cpu() -> dict[str, Any]:
    freq = psutil.cpu_freq()
    return {"physical": psutil.cpu_count(logical=False), "virtual": psutil.cpu_count(),
            "freq": {"min": freq.min, "max": freq.max} if freq else {"min": 0, "max": 0}}


def _memory() -> dict[str, int]:
    return {"virt": psutil.virtual_memory().total, "swap": psutil.swap_memory().total}


def _os_info() -> dict[str, Any]:
    d: dict[str, Any] = {"hostname": os.uname().nodename, "kernel": platform.release()}
    try:
        rel = platform.freedesktop_os_release()
        d["os"] = {"name": rel.get("NAME", ""), "version": rel.get("VERSION", rel.get("BUILD_ID", "")),
                   "pretty_name": rel.get("PRETTY_NAME", ""), "id": rel.get("ID", "")}
    except OSError:
        d["os"] = {"name": platform.system(), "version": platform.version()}
    d["python"] = {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "compiler": platform.python_compiler(), "executable": sys.executable}
    libc, version = platform.libc_ver()
    if libc == "glibc":
        d["glibc"] = version
    return d


def _nccl() -> dict[str, Any]:
    env = {k: ("<redacted>" if any(m in k.upper() for m in _MASKED) else v)
           for k, v in os.environ.items() if k.startswith(_NCCL_PREFIXES) or k in _NCCL_KEYS}
    return {"nccl_env": dict(sorted(env.items()))} if env else {}


def _gpu() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {}
    pynvml.nvmlInit()
    devices = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        name = pynvml.nvmlDeviceGetName(h)
        devices.append({"name": name.decode() if isinstance(name, bytes) else name,
                        "memory": {"total": pynvml.nvmlDeviceGetMemoryInfo(h).total}})
    driver = pynvml.nvmlSystemGetDriverVersion()
    return {"nvidia": {"count": len(devices), "devices": devices,
                       "driver": driver.decode() if isinstance(driver, bytes) else driver}}


def _git(cwd: str) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                               timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD")
    if not head:
        return {}
    root, commit, branch = (head.split("\n") + ["", "", ""])[:3]
    d: dict[str, Any] = {"root": root, "commit": commit,
                         "branch": "" if branch == "HEAD" else branch}  # detached: "" (stock)
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is not None:
        d["dirty"] = bool(status)
    url = git("config", "--get", "remote.origin.url")
    if url:
        d["url"] = re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)  # no password in a URL
    return d


def logger_settings(settings: dict | None, *, project: str, flush_interval: float,
                    console_on: bool, sanitize: bool, sys_on: bool,
                    sys_interval: float) -> dict[str, Any]:
    """The run's effective settings, sent as ``loggerSettings`` (the stock SDK sends its whole
    settings object there): the defaults this SDK used, under what the job passed. Never a
    key or a URL: nothing of the kind is a setting here."""
    from pluto_offline import __name__ as package

    effective: dict[str, Any] = {
        "project": project, "mode": "offline", "tag": package,
        "flush_interval": flush_interval, "disable_console": not console_on,
        "sanitize_logs": sanitize, "disable_system_metrics": not sys_on,
        "x_sys_sampling_interval": sys_interval,
    }
    return effective | {k: v for k, v in (settings or {}).items() if not k.startswith("_")}
