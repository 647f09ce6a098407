"""InfiniBand: the stock ``sys/ib.*`` series and ``infiniband`` facts, read from a sysfs-like
tree that a real job's counters move in, delivered by a real daemon to the local server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.console import jobs
from tests.sysmetrics.test_sysmetrics import deliver, server_id

PORT = ("link_layer", "state", "rate", "phys_state")
COUNTERS = ("port_rcv_data", "port_xmit_data", "port_rcv_packets", "port_xmit_packets")


def put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def ib_tree(root: Path) -> None:
    """Two HCAs as sysfs shows them, plus what a reader must step over."""
    dev = root / "mlx5_0"
    for attr, value in (("board_id", "MT_0000000223"), ("fw_ver", "28.39.1002"),
                        ("hca_type", "MT4129")):
        put(dev / attr, value)
    port = dev / "ports" / "1"
    for attr, value in zip(PORT, ("InfiniBand", "4: ACTIVE", "400 Gb/sec (4X NDR)",
                                  "5: LinkUp"), strict=True):
        put(port / attr, value)
    put(port / "gids" / "0", "fe80:0000:0000:0000:a088:c203:0012:3456")
    for c in COUNTERS:
        put(port / "counters" / c, "0")
    roce = root / "mlx5_1" / "ports" / "1"
    for attr, value in zip(PORT, ("Ethernet", "4: ACTIVE", "100 Gb/sec (4X EDR)", "5: LinkUp"),
                           strict=True):
        put(roce / attr, value)
    put(roce / "gids" / "0", "0000:0000:0000:0000:0000:0000:0000:0000")  # no GID
    put(roce / "gid_attrs" / "types" / "0", "RoCE v2")
    for c, v in zip(COUNTERS, (1000, 2000, 30, 40), strict=True):
        put(roce / "counters" / c, str(v))
    put(roce / "counters" / "port_rcv_errors", "0")  # not a series
    (root / "noports").mkdir()  # a device without ports
    (root / "mlx5_0" / "ports" / "2").mkdir()  # a port without counters
    put(root / "mlx5_1" / "ports" / "2" / "counters" / "port_rcv_data", "n/a")  # unreadable


JOB = """
    import pluto_offline.sysinfo as si
    si.INFINIBAND_ROOT = {root!r}
    where = os.path.join(si.INFINIBAND_ROOT, "mlx5_0", "ports", "1", "counters")

    def counters(words, packets):  # replaced whole, as the kernel shows a counter
        for name, value in (("port_rcv_data", words), ("port_xmit_data", 2 * words),
                            ("port_rcv_packets", packets), ("port_xmit_packets", 3 * packets)):
            with open(os.path.join(where, name + ".new"), "w") as f:
                f.write(f"{{value}}\\n")
            os.replace(os.path.join(where, name + ".new"), os.path.join(where, name))

    run = pluto.init(name="ib", run_id="ib1", settings={{"x_sys_sampling_interval": 0.25}})
    for k in range(1, 13):  # moving: 1000 words and 10 packets each 0.1 s
        counters(1000 * k, 10 * k)
        time.sleep(0.1)
    time.sleep(1.0)  # still: rate 0
    counters(7, 1)  # cleared (a reset): counted from 0
    time.sleep(0.75)
    run.finish()
"""


@pytest.fixture(scope="module")
def delivered(tmp_path_factory, pluto_server_module):
    tmp_path, pluto_server = tmp_path_factory.mktemp("ib"), pluto_server_module
    root = tmp_path / "sys" / "class" / "infiniband"
    ib_tree(root)
    code, _, err = jobs.run(tmp_path / "j", JOB.format(root=str(root)))
    assert code == 0, err
    assert b"Traceback" not in err and b"rror" not in err, err
    deliver(pluto_server, tmp_path / "j")
    return pluto_server, server_id(tmp_path / "j", "ib1")


def points(server, sid: int, name: str) -> dict[int, tuple[float, float]]:
    """step -> (value, time in s)"""
    out = {}
    for p in server.metrics(sid, "proj", name):
        t = p["time"]
        out[p["step"]] = (p["value"], (t if isinstance(t, (int, float)) else _ms(t)) / 1000)
    return out


def _ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def test_ib_series_under_the_stock_names_with_rates_from_the_deltas(delivered):
    server, sid = delivered
    names = set(server.metric_names("proj", sid))
    ib = {n for n in names if n.startswith("sys/ib.")}
    expected = {f"sys/ib.{dev}.1.{c}{rate}" for dev in ("mlx5_0", "mlx5_1")
                for c in ("rcv_bytes", "xmit_bytes", "rcv_packets", "xmit_packets")
                for rate in ("", ".rate")}
    assert ib == expected, sorted(ib)  # nothing of noports, of port 2, of other counters

    written_words = {0, 7} | {1000 * k for k in range(1, 13)}
    written_packets = {0, 1} | {10 * k for k in range(1, 13)}
    for name, allowed in (("rcv_bytes", {4 * w for w in written_words}),
                          ("xmit_bytes", {8 * w for w in written_words}),
                          ("rcv_packets", written_packets),
                          ("xmit_packets", {3 * p for p in written_packets})):
        series = points(server, sid, f"sys/ib.mlx5_0.1.{name}")
        assert len(series) >= 6 and {v for v, _ in series.values()} <= allowed, (name, series)
        rates = points(server, sid, f"sys/ib.mlx5_0.1.{name}.rate")
        first = min(series)
        assert first not in rates and set(rates) == set(series) - {first}  # from the 2nd on
        seen = {"moving": 0, "still": 0, "reset": 0}
        for step, (rate, _) in rates.items():
            (v0, t0), (v1, t1) = series[step - 1], series[step]
            delta = v1 - v0 if v1 >= v0 else v1  # a cleared counter counts from 0
            assert rate == pytest.approx(delta / (t1 - t0), rel=0.25, abs=1e-9), (name, step)
            seen["still" if delta == 0 else "reset" if v1 < v0 else "moving"] += 1
        assert all(seen.values()), (name, seen)
    # the other HCA's counters stood still: fixed values, rates 0
    assert {v for v, _ in points(server, sid, "sys/ib.mlx5_1.1.rcv_bytes").values()} == {4000.0}
    assert {v for v, _ in points(server, sid, "sys/ib.mlx5_1.1.xmit_packets").values()} == {40.0}
    assert {v for v, _ in points(server, sid, "sys/ib.mlx5_1.1.rcv_bytes.rate").values()} == {0.0}


def test_ib_facts_in_system_metadata(delivered):
    server, sid = delivered
    meta = server.get_run(sid)["systemMetadata"]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    devices = {d["name"]: d for d in meta["infiniband"]["devices"]}
    assert devices["noports"] == {"name": "noports"}
    assert devices["mlx5_0"] == {
        "name": "mlx5_0", "board_id": "MT_0000000223", "fw_ver": "28.39.1002",
        "hca_type": "MT4129",
        "ports": [{"port": "1", "link_layer": "InfiniBand", "state": "4: ACTIVE",
                   "rate": "400 Gb/sec (4X NDR)", "phys_state": "5: LinkUp",
                   "gid_0": "fe80:0000:0000:0000:a088:c203:0012:3456"},
                  {"port": "2"}]}
    roce = devices["mlx5_1"]["ports"][0]
    assert roce["link_layer"] == "Ethernet" and roce["roce_type"] == "RoCE v2"
    assert "gid_0" not in roce  # all zero: none (stock)


def test_device_names_in_series_names_as_the_stock_sdk_renames_them():
    from pluto.api import make_compat_monitor_v1  # the installed stock SDK, as the reference

    from pluto_offline.sysmetrics import stock_name

    for name in ("sys/ib.mlx5_0.1.rcv_bytes", "sys/ib.rxe-net.1.xmit_bytes.rate",
                 "sys/ib.mem.pct.recv_packets", "sys/ib.bytes_.1.rcv_packets",
                 "sys/gpu.0.nvidia_a100_sxm4_80gb.memory.used"):
        assert stock_name(name) == next(iter(make_compat_monitor_v1({name: 1}))), name
    assert stock_name("sys/ib.rxe-net.1.rcv_bytes") == "sys/ib.rxe-network.1.rcv_bytes"
