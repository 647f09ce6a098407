"""What a chaos writer records besides numbers (issues 9 and 10): console lines, histograms,
images and an artifact — and the oracle's count of what the server holds of them.

Everything is drawn from (writer, step) alone, so the oracle recomputes it::

    >>> line("t0", 7)
    'chaos-line t0 7'
    >>> hist_values("t0", 3) == hist_values("t0", 3) and len(hist_values("t0", 3))
    32

A writer's ``extras`` (:class:`tests.chaos.schedule.Writer`) says which it records:
``print`` (a flushed line on stdout every :data:`LINE_EVERY` steps: the console capture journals
it), ``hist`` (a :class:`pluto_offline.Histogram` every :data:`HIST_EVERY`), ``image`` (two
8×8 images, one step's samples, every :data:`IMAGE_EVERY`) and ``artifact`` (one file of a few
MB given by path, at ``artifact_at``). All of a step's records go in the step's one ``log()``
call (the line is printed just before it), so the writer's ``log`` report covers them.

Failures counted (:func:`check`): ``lost`` (a record whose step was reported, missing), the
``dup_data`` window beyond what the journals counted as resent, ``phantom`` (a chaos record
never logged), ``mismatched`` (a file whose bytes or a histogram whose counts differ).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from typing import Any

LINE_EVERY = 2
HIST_EVERY = 3
IMAGE_EVERY = 5
KINDS = ("print", "hist", "image", "artifact")
_MARK = "chaos-line "


# ------------------------------------------------------------------ the content
def line(writer: str, step: int) -> str:
    return f"{_MARK}{writer} {step}"


def hist_values(writer: str, step: int) -> list[float]:
    rng = random.Random(f"{writer}/{step}/hist")
    return [round(rng.gauss(step % 7, 1.0), 6) for _ in range(32)]


def hist_name(writer: str) -> str:
    return f"hist/{writer}"


def image_name(writer: str) -> str:
    return f"samples/{writer}"


def image_caption(writer: str, step: int, k: int) -> str:
    return f"{writer}@{step}#{k}"


def image_pixels(writer: str, step: int, k: int) -> bytes:
    """8×8 RGB, row-major: what the server's PNG must decode to."""
    return random.Random(image_caption(writer, step, k)).randbytes(8 * 8 * 3)


def artifact_name(writer: str) -> str:
    return f"artifact/{writer}"


def artifact_bytes(writer: str, size: int) -> bytes:
    return random.Random(f"{writer}/artifact").randbytes(size)


def step_has(kind: str, index: int) -> bool:
    """Whether the ``index``-th log() call of a writer with ``kind`` records it."""
    every = {"print": LINE_EVERY, "hist": HIST_EVERY, "image": IMAGE_EVERY}.get(kind)
    return every is not None and index % every == 0


# ------------------------------------------------------------------ the writer's side
def record(pluto: Any, spec: dict, index: int, step: int, data: dict[str, Any]) -> None:
    """Print this step's line and add this step's records to ``data`` (the step's log())."""
    extras = spec.get("extras") or ()
    name = spec["name"]
    if "print" in extras and step_has("print", index):
        print(line(name, step), flush=True)
    if "hist" in extras and step_has("hist", index):
        data[hist_name(name)] = pluto.Histogram(hist_values(name, step), bins=8)
    if "image" in extras and step_has("image", index):
        import numpy as np

        data[image_name(name)] = [
            pluto.Image(np.frombuffer(image_pixels(name, step, k), dtype=np.uint8)
                        .reshape(8, 8, 3), caption=image_caption(name, step, k))
            for k in range(2)]
    if "artifact" in extras and index == spec.get("artifact_at"):
        path = os.path.join(os.path.dirname(spec["report"]), f"artifact-{name}.bin")
        with open(path, "wb") as f:  # written before the log() that names it, never again
            f.write(artifact_bytes(name, spec["artifact_size"]))
        data[artifact_name(name)] = pluto.Artifact(path, caption=f"{name} artifact")


# ------------------------------------------------------------------ the oracle's side
def expected(writers: list[Any], reports: dict[str, list[dict]],
             cut: dict[str, int]) -> dict[str, dict[Any, Any]]:
    """Per kind, the records required (their step was reported) and allowed (the step after,
    for a writer signalled between its log() and the report: ``cut`` maps its name to its
    first explicit step, which for an allocation is where the previous one stopped)."""
    req: dict[str, dict[Any, Any]] = {k: {} for k in KINDS}
    allowed: dict[str, dict[Any, Any]] = {k: {} for k in KINDS}
    for w in writers:
        if not w.extras:
            continue
        steps = [x["step"] for x in reports.get(w.name, []) if x["op"] == "log"]
        plan = [(i, s, req) for i, s in enumerate(steps)]
        if w.name in cut and len(steps) < w.steps:
            init = next((x for x in reports.get(w.name, []) if x["op"] == "init"), None)
            if init is not None:
                nxt = (cut[w.name] + len(steps)) if w.explicit_steps else \
                    (steps[-1] if steps else init["step"]) + 1
                plan.append((len(steps), nxt, allowed))
        for i, s, into in plan:
            _expect(w, i, s, into)
    return {"required": req, "allowed": allowed}


def _expect(w: Any, i: int, s: int, into: dict[str, dict[Any, Any]]) -> None:
    if "print" in w.extras and step_has("print", i):
        into["print"][line(w.name, s)] = True
    if "hist" in w.extras and step_has("hist", i):
        into["hist"][(hist_name(w.name), s)] = hist_values(w.name, s)
    if "image" in w.extras and step_has("image", i):
        for k in range(2):
            into["image"][image_caption(w.name, s, k)] = (w.name, s, k)
    if "artifact" in w.extras and i == w.artifact_at:
        into["artifact"][artifact_name(w.name)] = (w.name, w.artifact_size)


def check(c: Any, run_id: str, sid: int, project: str, exp: dict, server: Any,
          resent: int, files_resent: int) -> int:
    """Count what the server holds of the run's extras against ``exp``; returns the records
    seen twice within the journals' resent window (the contract's, not a failure)."""
    req, allowed = exp["required"], exp["allowed"]
    if not any(req[k] or allowed[k] for k in KINDS):
        return 0
    absorbed = 0
    dups: list[str] = []
    # console lines
    lines: dict[str, int] = {}
    for r in server.logs(sid, project):
        msg = r.get("message") or ""
        at = msg.find(_MARK)
        if at >= 0:
            lines[msg[at:]] = lines.get(msg[at:], 0) + 1
    c.lines_checked += len(req["print"])
    _count(c, run_id, "console lines", req["print"], allowed["print"], lines, dups)
    # histograms
    hists: dict[tuple[str, int], list[Any]] = {}
    for r in _data_rows(server, sid, project):
        if str(r.get("logName", "")).startswith("hist/"):
            hists.setdefault((r["logName"], int(r["step"])), []).append(r["data"])
    c.rows_checked += len(req["hist"])
    _count(c, run_id, "histogram rows", req["hist"], allowed["hist"],
           {k: len(v) for k, v in hists.items()}, dups)
    wrong = [k for k, v in hists.items() if k in req["hist"] or k in allowed["hist"]
             if any(_hist_freq(d) != _freq(req["hist"].get(k) or allowed["hist"][k])
                    for d in v)]
    c.add("mismatched", len(wrong), f"{run_id}: histograms with other counts, e.g. {wrong[:3]}")
    # files
    files = _files(server, sid, project)
    images = {f["caption"]: f for f in files if str(f["logName"]).startswith("samples/")}
    arts = {f["logName"]: f for f in files if str(f["logName"]).startswith("artifact/")}
    seen_images: dict[str, int] = {}
    seen_arts: dict[str, int] = {}
    for f in files:
        if str(f["logName"]).startswith("samples/"):
            seen_images[f["caption"]] = seen_images.get(f["caption"], 0) + 1
        elif str(f["logName"]).startswith("artifact/"):
            seen_arts[f["logName"]] = seen_arts.get(f["logName"], 0) + 1
    c.files_checked += len(req["image"]) + len(req["artifact"])
    file_dups: list[str] = []
    _count(c, run_id, "images", req["image"], allowed["image"], seen_images, file_dups)
    _count(c, run_id, "artifacts", req["artifact"], allowed["artifact"], seen_arts, file_dups)
    bad = [cap for cap, f in images.items()
           if (want := req["image"].get(cap) or allowed["image"].get(cap)) is not None
           and _pixels(server, f["url"]) != image_pixels(*want)]
    bad += [log for log, f in arts.items()
            if (want := req["artifact"].get(log) or allowed["artifact"].get(log)) is not None
            and _sha(server, f["url"]) != hashlib.sha256(artifact_bytes(*want)).hexdigest()]
    c.add("mismatched", len(bad), f"{run_id}: files whose bytes differ from what was logged, "
          f"e.g. {bad[:3]}")
    # every name registered with its type (what the UI lists): images, artifacts, histograms
    want = {image_name(cap.split("@")[0]): "IMAGE" for cap in req["image"]}
    want.update({log: "ARTIFACT" for log in req["artifact"]})
    want.update({name: "HISTOGRAM" for name, _ in req["hist"]})
    listed = {n["logName"]: n.get("logType") for n in server.get_run(sid).get("logNames") or ()}
    unlisted = sorted(f"{n} ({t})" for n, t in want.items() if listed.get(n) != t)
    c.add("lost", len(unlisted), f"{run_id}: log names not registered with their type: "
          f"{unlisted[:4]}")
    absorbed += _window(c, run_id, dups, resent, "records of kinds the server keeps twice")
    absorbed += _window(c, run_id, file_dups, files_resent, "files")
    return absorbed


def _count(c: Any, run_id: str, what: str, req: dict, allowed: dict, seen: dict[Any, int],
           dups: list[str]) -> None:
    missing = [k for k in req if not seen.get(k)]
    c.add("lost", len(missing), f"{run_id}: {what} missing, e.g. {sorted(missing)[:3]}")
    phantom = [k for k in seen if k not in req and k not in allowed]
    c.add("phantom", len(phantom), f"{run_id}: {what} never logged, e.g. {sorted(phantom)[:3]}")
    dups.extend(f"{what}: {k} x{n}" for k, n in sorted(seen.items()) if n > 1
                for _ in range(n - 1))


def _window(c: Any, run_id: str, dups: list[str], resent: int, what: str) -> int:
    """Duplicates within the journals' count of records resent after no answer are the
    contract's at-least-once window; beyond it they are failures."""
    if not dups:
        return 0
    if len(dups) <= resent:
        return len(dups)
    c.add("dup_data", len(dups), f"{run_id}: {what} stored more than once ({resent} counted "
          f"as resent by the journals), e.g. {dups[:3]}")
    return 0


def _data_rows(server: Any, sid: int, project: str) -> list[dict]:
    r = server.request("GET", "/api/runs/data", params={"runId": sid, "projectName": project})
    r.raise_for_status()
    return r.json()["data"]


def _files(server: Any, sid: int, project: str) -> list[dict]:
    r = server.request("GET", "/api/runs/files", params={"runId": sid, "projectName": project})
    r.raise_for_status()
    return r.json()["files"]


def _hist_freq(data: Any) -> Any:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    return data.get("freq") if isinstance(data, dict) else None


def _freq(values: list[float]) -> list[int]:
    from pluto_offline import Histogram

    return Histogram(values, bins=8).to_dict()["freq"]


def _download(server: Any, url: str) -> bytes | None:
    import requests

    r = requests.get(url, timeout=30)
    return r.content if r.status_code == 200 else None


def _pixels(server: Any, url: str) -> bytes | None:
    from PIL import Image

    raw = _download(server, url)
    if raw is None:
        return None
    try:
        return Image.open(io.BytesIO(raw)).convert("RGB").tobytes()
    except Exception:  # noqa: BLE001 — not an image: a mismatch
        return None


def _sha(server: Any, url: str) -> str | None:
    raw = _download(server, url)
    return None if raw is None else hashlib.sha256(raw).hexdigest()
