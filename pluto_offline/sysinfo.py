"""The facts the stock SDK sends as a run's ``systemMetadata``, gathered at ``init()`` offline.

Shape as the stock SDK's ``System.get_info`` (``pluto/sys.py``, pluto-ml 0.0.29), the keys a
reader of stock runs knows: ``process`` (``pid``, ``exe``, ``cmdline``), ``platform`` (uname),
``timezone``, ``cpu`` (``physical``, ``virtual``, ``freq``: MHz), ``memory`` (``virt``,
``swap``: bytes), ``boot_time`` (epoch s), ``requirements`` (``name==version``), ``os_info``
(``hostname``, ``os``, ``kernel``, ``python``, ``glibc``), ``cuda`` (``cuda_nvcc``: ``nvcc
--version``'s release; ``cuda_driver``: the driver's CUDA version, from NVML; ``cuda_pytorch``,
``cudnn_pytorch``: torch's, when the job imported torch before ``init()``; ``cuda_env``: the
``CUDA_*`` variables), ``nccl`` (``nccl_env``), ``infiniband`` (``devices``: ``name``,
``board_id``, ``fw_ver``, ``hca_type``, ``ports``: ``port``, ``link_layer``, ``state``, ``rate``,
``phys_state``, ``gid_0``, ``roce_type``, from sysfs), ``gpu.nvidia`` (``count``, ``driver``,
``devices``: ``name``, ``memory.total``, ``temp``, ``pid``; with ``nvidia-ml-py``) and ``git``
(``root``, ``branch``, ``commit``, ``dirty``, ``url``). Journaled in the ``create`` event
(``system``) and sent in the create's ``systemMetadata`` beside plutosync's own keys.

Cheap by design (a few ms): installed packages are read from the ``*.dist-info`` directory
names on ``sys.path`` (no metadata file is opened); git is asked with ``git`` commands bounded by
``GIT_TIMEOUT_S`` each; ``nvcc --version`` runs only when ``nvcc`` is on ``PATH``, once per
process, beside the other facts (bounded by ``NVCC_TIMEOUT_S``: a slower one is killed, its
fact left out); torch is never imported; nothing opens a socket; the environment is never
included (only NCCL's and CUDA's variables, credential-like values masked as the stock SDK masks
NCCL's).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import psutil

from pluto_offline.journal import shareable
from pluto_offline.journal.shareable import SECRET_NAMES, no_password

GIT_TIMEOUT_S = 2.0
NVCC_TIMEOUT_S = 2.0
# Where InfiniBand devices are listed (sysfs); tests point it at a tree of their own.
INFINIBAND_ROOT = "/sys/class/infiniband"
_NCCL_PREFIXES = ("NCCL_", "TORCH_NCCL_", "FI_", "OFI_", "UCX_")
_NCCL_KEYS = ("TORCH_DISTRIBUTED_DEBUG", "TORCH_CPP_LOG_LEVEL", "TORCH_SHOW_CPP_STACKTRACES",
              "GLOO_SOCKET_IFNAME")
_MASKED = SECRET_NAMES
_DIST = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(?:-py[\d.]+)?\.(?:dist|egg)-info$")
_requirements: list[str] | None = None  # per process: sys.path rarely changes
_nvcc_release: str | None = None  # per process: "" when there is none


def _masked(env: dict[str, str]) -> dict[str, str]:
    return {k: ("<redacted>" if any(m in k.upper() for m in _MASKED) else v)
            for k, v in sorted(env.items())}


def system_metadata(cwd: str | None = None) -> dict[str, Any]:
    """The stock ``systemMetadata`` facts of this process and host (never raises)."""
    out: dict[str, Any] = {}
    nvcc = _Nvcc()  # runs while the other facts are read
    for key, part in (("process", _process), ("platform", lambda: platform.uname()._asdict()),
                      ("timezone", lambda: list(time.tzname)), ("cpu", _cpu),
                      ("memory", _memory), ("boot_time", psutil.boot_time),
                      ("requirements", requirements), ("os_info", _os_info), ("nccl", _nccl),
                      ("infiniband", _infiniband), ("gpu", _gpu),
                      ("git", lambda: _git(cwd or os.getcwd())), ("cuda", lambda: _cuda(nvcc))):
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
    env = _masked({k: v for k, v in os.environ.items()
                   if k.startswith(_NCCL_PREFIXES) or k in _NCCL_KEYS})
    return {"nccl_env": env} if env else {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {}
    pynvml.nvmlInit()
    devices = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        device: dict[str, Any] = {"name": _text(pynvml.nvmlDeviceGetName(h)),
                                  "memory": {"total": pynvml.nvmlDeviceGetMemoryInfo(h).total}}
        try:
            device["temp"] = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        except Exception:
            pass
        try:
            device["pid"] = [p.pid for p in (pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                                             + pynvml.nvmlDeviceGetGraphicsRunningProcesses(h))]
        except Exception:
            pass
        devices.append(device)
    return {"nvidia": {"count": len(devices), "devices": devices,
                       "driver": _text(pynvml.nvmlSystemGetDriverVersion())}}


class _Nvcc:
    """``nvcc --version``, started at once (when ``nvcc`` is on PATH and this process has not
    asked yet), read by ``release()`` at most ``NVCC_TIMEOUT_S`` after its start."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.started = time.monotonic()
        path = shutil.which("nvcc") if _nvcc_release is None else None
        if path:
            try:
                self.proc = subprocess.Popen([path, "--version"], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                             text=True, errors="replace",
                                             start_new_session=True)
            except (OSError, subprocess.SubprocessError):
                pass

    def release(self) -> str:
        global _nvcc_release
        if _nvcc_release is not None:
            return _nvcc_release
        proc, found = self.proc, ""
        if proc is not None:
            left = NVCC_TIMEOUT_S - (time.monotonic() - self.started)
            try:
                out, _ = proc.communicate(timeout=max(left, 0.01))
                m = re.search(r"release\s+([\d.]+)", out or "")
                found = m.group(1) if m else ""
            except subprocess.TimeoutExpired:  # too slow: killed with what it started
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        _nvcc_release = found
        return found


def _cuda(nvcc: _Nvcc) -> dict[str, Any]:
    d: dict[str, Any] = {}
    release = nvcc.release()
    if release:
        d["cuda_nvcc"] = release
    try:
        import pynvml

        pynvml.nvmlInit()  # counted: already done by _gpu, or fails fast as it did
        v = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040 for 12.4
        d["cuda_driver"] = f"{v // 1000}.{v % 1000 // 10}"
    except Exception:
        pass
    torch = sys.modules.get("torch")  # never imported here: it takes seconds
    if torch is not None:
        try:
            if torch.version.cuda is not None:
                d["cuda_pytorch"] = torch.version.cuda
            cudnn = torch.backends.cudnn.version()
            if cudnn is not None:
                d["cudnn_pytorch"] = str(cudnn)
        except Exception:
            pass
    env = _masked({k: v for k, v in os.environ.items() if k.startswith("CUDA_")})
    if env:
        d["cuda_env"] = env
    return d


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _infiniband() -> dict[str, Any]:
    root = INFINIBAND_ROOT
    devices = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        device: dict[str, Any] = {"name": name}
        for attr in ("board_id", "fw_ver", "hca_type"):
            value = _read(os.path.join(root, name, attr))
            if value is not None:
                device[attr] = value
        ports_dir = os.path.join(root, name, "ports")
        if os.path.isdir(ports_dir):
            ports = []
            for port in sorted(os.listdir(ports_dir)):
                where = os.path.join(ports_dir, port)
                info = {"port": port}
                for attr, rel in (("link_layer", "link_layer"), ("state", "state"),
                                  ("rate", "rate"), ("phys_state", "phys_state"),
                                  ("gid_0", "gids/0"), ("roce_type", "gid_attrs/types/0")):
                    value = _read(os.path.join(where, rel))
                    if value is not None and not (attr == "gid_0" and value.strip("0:") == ""):
                        info[attr] = value  # an all-zero GID is no GID (stock)
                ports.append(info)
            device["ports"] = ports
        devices.append(device)
    return {"devices": devices} if devices else {}


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
        d["url"] = no_password(url)
    return d


def shareable_settings(settings: dict | None) -> dict[str, Any]:
    """``journal.shareable.shareable_settings`` with this process's API key."""
    from pluto_offline.console.redact import api_key_from_env

    return shareable.shareable_settings(settings, api_key_from_env())


def logger_settings(settings: dict | None, *, project: str, flush_interval: float,
                    console_on: bool, sanitize: bool, sys_on: bool,
                    sys_interval: float) -> dict[str, Any]:
    """The run's effective settings, sent as ``loggerSettings`` (the stock SDK sends its whole
    settings object there): the defaults this SDK used, under what the job passed, less what
    ``shareable_settings`` leaves out (never a key nor the webhook URL)."""
    from pluto_offline import __name__ as package

    effective: dict[str, Any] = {
        "project": project, "mode": "offline", "tag": package,
        "flush_interval": flush_interval, "disable_console": not console_on,
        "sanitize_logs": sanitize, "disable_system_metrics": not sys_on,
        "x_sys_sampling_interval": sys_interval,
    }
    return effective | shareable_settings(settings)
