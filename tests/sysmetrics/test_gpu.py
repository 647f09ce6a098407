"""GPUs and CUDA: the stock ``sys/gpu.*`` series and the ``gpu``/``cuda`` facts of a real job,
delivered by a real daemon to the local server. This machine has no GPU: the job finds a small
fake ``pynvml`` on its PYTHONPATH (the one part made up here) and a fake ``nvcc`` on its PATH."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

from pluto_offline import sysmetrics
from tests.console import jobs
from tests.sysmetrics.test_sysmetrics import deliver, server_id

FAKE_PYNVML = '''
import os

class NVMLError(Exception):
    pass

class NVMLError_LibraryNotFound(NVMLError):
    pass

NVML_TEMPERATURE_GPU = 0
# name, memory total, used, utilization gpu %, memory %, power mW, temperature C
DEVICES = [("NVIDIA A100-SXM4-80GB", 85899345920, 123456789, 87, 42, 250123, 61),
           ("Tesla T4", 16106127360, 2048, 5, 1, 70000, 40)]

class Struct:
    def __init__(self, **kw):
        self.__dict__.update(kw)

def nvmlInit():
    mode = os.environ.get("FAKE_NVML", "")
    if mode == "fail":
        raise NVMLError("Unknown Error")
    if mode == "nolib":
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return len(DEVICES)
def nvmlDeviceGetHandleByIndex(i): return DEVICES[i]
def nvmlDeviceGetIndex(h): return DEVICES.index(h)
def nvmlDeviceGetName(h): return h[0]
def nvmlDeviceGetMemoryInfo(h): return Struct(total=h[1], used=h[2], free=h[1] - h[2])
def nvmlDeviceGetUtilizationRates(h): return Struct(gpu=h[3], memory=h[4])
def nvmlDeviceGetPowerUsage(h): return h[5]
def nvmlDeviceGetTemperature(h, sensor): return h[6]
def nvmlDeviceGetComputeRunningProcesses(h):
    return [Struct(pid=os.getpid())] if h is DEVICES[0] else []
def nvmlDeviceGetGraphicsRunningProcesses(h): return []
def nvmlSystemGetDriverVersion(): return "550.54.15"
def nvmlSystemGetCudaDriverVersion(): return 12040
'''


def fakes(tmp: Path, nvcc: str) -> dict[str, str]:
    """The job's environment: the fake pynvml importable, the fake nvcc first on PATH."""
    (tmp / "py").mkdir()
    (tmp / "py" / "pynvml.py").write_text(FAKE_PYNVML)
    (tmp / "bin").mkdir()
    (tmp / "bin" / "nvcc").write_text("#!/bin/sh\n" + textwrap.dedent(nvcc))
    (tmp / "bin" / "nvcc").chmod(0o755)
    return {"PYTHONPATH": str(tmp / "py"), "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}"}


def system_metadata(server, sid: int) -> dict:
    meta = server.get_run(sid)["systemMetadata"]
    return json.loads(meta) if isinstance(meta, str) else meta


def test_gpu_series_and_facts_from_nvml(tmp_path, pluto_server):
    env = fakes(tmp_path, """\
        echo 'nvcc: NVIDIA (R) Cuda compiler driver'
        echo 'Cuda compilation tools, release 12.4, V12.4.131'
    """)
    code, out, err = jobs.run(tmp_path / "j", """
        run = pluto.init(name="g", run_id="g1", settings={"x_sys_sampling_interval": 0.2})
        time.sleep(0.9)
        run.finish()
        print("PID", os.getpid())
    """, **env, CUDA_VISIBLE_DEVICES="1,0", CUDA_DEVICE_ORDER="PCI_BUS_ID",
        CUDA_FAKE_API_TOKEN="s3cret")
    assert code == 0, err
    assert b"NVML" not in err and b"Traceback" not in err, err
    deliver(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "g1")
    names = set(pluto_server.metric_names("proj", sid))
    expected = {
        "sys/gpu.0.nvidia_a100_sxm4_80gb.utilization": 87,
        "sys/gpu.0.nvidia_a100_sxm4_80gb.memory.used": 123456789,
        "sys/gpu.0.nvidia_a100_sxm4_80gb.memory.utilization": 42,
        "sys/gpu.0.nvidia_a100_sxm4_80gb.power": 250123,
        "sys/gpu.1.tesla_t4.utilization": 5, "sys/gpu.1.tesla_t4.memory.used": 2048,
        "sys/gpu.1.tesla_t4.memory.utilization": 1, "sys/gpu.1.tesla_t4.power": 70000,
    }
    assert {n for n in names if n.startswith("sys/gpu")} == set(expected), sorted(names)
    for name, value in expected.items():
        series = pluto_server.metrics(sid, "proj", name)
        assert len(series) >= 2 and {p["value"] for p in series} == {value}, (name, series)

    meta = system_metadata(pluto_server, sid)
    pid = int(out.decode().split("PID")[1].split()[0])
    nvidia = meta["gpu"]["nvidia"]
    assert nvidia["count"] == 2 and nvidia["driver"] == "550.54.15"
    a100, t4 = nvidia["devices"]
    assert a100["name"] == "NVIDIA A100-SXM4-80GB" and a100["memory"] == {"total": 85899345920}
    assert a100["temp"] == 61 and a100["pid"] == [pid]
    assert t4 == {"name": "Tesla T4", "memory": {"total": 16106127360}, "temp": 40, "pid": []}
    cuda = meta["cuda"]
    assert cuda["cuda_nvcc"] == "12.4" and cuda["cuda_driver"] == "12.4"
    assert "cuda_pytorch" not in cuda  # torch was not imported by the job
    assert {k: cuda["cuda_env"][k] for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
                                             "CUDA_FAKE_API_TOKEN")} == {
        "CUDA_VISIBLE_DEVICES": "1,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_FAKE_API_TOKEN": "<redacted>"}


def test_nvml_that_fails_and_a_hung_nvcc_leave_the_job_going(tmp_path, pluto_server):
    pids = tmp_path / "nvcc.pids"
    env = fakes(tmp_path, f"""\
        echo $$ >> {pids}
        exec sleep 60
    """)
    code, out, err = jobs.run(tmp_path / "j", """
        import pluto_offline.sysinfo as si
        si.NVCC_TIMEOUT_S = 0.5
        for name in ("f1", "f2"):  # two runs of one process: one warning in all
            t = time.monotonic()
            run = pluto.init(name=name, run_id=name,
                             settings={"x_sys_sampling_interval": 0.2})
            print("INIT", name, time.monotonic() - t, flush=True)
            run.log({"loss": 1.0})
            time.sleep(0.7)
            run.finish()
    """, **env, FAKE_NVML="fail")
    assert code == 0, err
    warnings = [line for line in err.decode().splitlines() if "NVML" in line]
    assert len(warnings) <= 1 and b"Traceback" not in err, err
    took = {line.split()[1]: float(line.split()[2]) for line in out.decode().splitlines()
            if line.startswith("INIT ")}
    assert took["f1"] < 20 and took["f2"] < 20, took  # never the 60 s of the hung nvcc
    started = pids.read_text().split()
    assert len(started) == 1, started  # once per process
    assert not os.path.exists(f"/proc/{started[0]}"), "the hung nvcc was left running"
    deliver(pluto_server, tmp_path / "j")
    for run_id in ("f1", "f2"):
        sid = server_id(tmp_path / "j", run_id)
        names = pluto_server.metric_names("proj", sid)
        assert "sys/memory.used" in names and "loss" in names
        assert not [n for n in names if n.startswith("sys/gpu")], names
        meta = system_metadata(pluto_server, sid)
        assert "gpu" not in meta and "cuda_nvcc" not in meta.get("cuda", {})
        assert "cuda_driver" not in meta.get("cuda", {})


def test_no_nvml_library_no_warning(tmp_path, monkeypatch, caplog):
    fakes(tmp_path, "")
    monkeypatch.syspath_prepend(str(tmp_path / "py"))
    monkeypatch.delitem(__import__("sys").modules, "pynvml", raising=False)
    monkeypatch.setattr(sysmetrics.Gpus, "warned", False)
    monkeypatch.setenv("FAKE_NVML", "nolib")
    with caplog.at_level(logging.DEBUG, "pluto_offline"):
        assert sysmetrics.Gpus().handles == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    monkeypatch.setenv("FAKE_NVML", "fail")
    with caplog.at_level(logging.DEBUG, "pluto_offline"):
        assert sysmetrics.Gpus().handles == [] and sysmetrics.Gpus().handles == []
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
