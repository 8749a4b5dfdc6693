"""Frame-to-audio latency of the Live tab's transport (Gradio 6 streaming, naturall2s/studio/live.py) against a
minimal fastrtc (WebRTC) equivalent, in headless Chromium; docs/live.md, "Gradio streaming or fastrtc".

    nice -n 5 python benchmarks/live_transport/bench.py run --fastrtc-python VENV/bin/python \\
        --seconds 180 --rounds 3 --out results/live/transport
    python benchmarks/live_transport/bench.py report results/live/transport/*.json

The Live tab before and after a change, alternating, each from its own checkout of the repository:

    git archive COMMIT naturall2s | tar -x -C ../live-before
    nice -n 5 python benchmarks/live_transport/bench.py run --kinds gradio-before gradio --before-repo ../live-before \\
        --seconds 90 --rounds 3 --out results/live/transport/player

fastrtc needs gradio<6, so its server runs under another Python (``--fastrtc-python``: a venv with ``pip install
fastrtc``); the Gradio server and this script run in the project's venv (selenium, Debian's chromium and
chromium-driver).

Method. Both servers (``probe_servers.py``) push the newest camera picture every 1/25 s into the same probe instead of
the model (a bright picture -> 40 ms of a 1 kHz tone, a dark one -> silence), so only the transport differs; the
model's own latency is measured apart (bench_live.py). In the browser, ``probe.js`` replaces the camera by a canvas
drawn at 25 fps, black but white for 0.4 s every 12 s, and watches the audio that comes back in Web Audio (the Live
tab's page player at its output node; before it, Gradio's streaming player through a MediaElementSource; fastrtc's
WebRTC track through a MediaStreamSource). For the page player, each take's json also keeps its counters and chunk
arrivals (``player``; replayed with other settings by ``player_policy.py``). Each white flash
gives three times on one clock (the browser's and the server's are the same machine's): the flash is drawn, the
server pushes its first bright picture, the tone's onset reaches Web Audio. Uplink = push - draw, downlink = onset -
push, total = their sum. Runs alternate Gradio / fastrtc, a fresh server each, ``--seconds`` of take each after the
first tone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def browser(log_console: bool = True):
    """Headless Chromium with a fake microphone (fastrtc asks for one), media permission granted, autoplay allowed,
    and probe.js injected into every page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                 "--window-size=1400,1800", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-probe-')}"]:
        opts.add_argument(flag)
    if log_console:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (HERE / "probe.js").read_text()})
    return d


def wait(d, what: str, check, timeout: float = 120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = check()
            if value:
                return value
        except Exception:  # not there yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def start_gradio(d, url: str) -> int:
    """The Live tab: grant the webcam, Record, Listen (as tests/test_browser.py does)."""
    from selenium.webdriver.common.by import By

    d.get(url)
    wait(d, "the webcam button", lambda: d.find_element(
        By.CSS_SELECTOR, "#live-camera div[title='grant webcam access'] button")).click()
    wait(d, "Record", lambda: [b for b in d.find_elements(By.CSS_SELECTOR, "#live-camera button")
                               if b.text.strip() == "Record"])[0].click()
    d.find_element(By.ID, "live-listen").click()
    return 1


def start_fastrtc(d, url: str) -> int:
    """fastrtc's page: its start button (clicked from script: the page's footer covers it); the WebRTC connection
    does not always come up at once on this machine, so the page is loaded again after 30 s without an audio track.
    -> attempts."""
    from selenium.webdriver.common.by import By

    for attempt in range(1, 5):
        d.get(url)
        button = wait(d, "the start button", lambda: d.find_element(By.CSS_SELECTOR, "button[aria-label='start stream']"))
        d.execute_script("arguments[0].click()", button)
        end = time.time() + 30
        while time.time() < end:
            if d.execute_script("return window.__probe.hooked.length"):
                return attempt
            time.sleep(0.5)
    raise TimeoutError("no WebRTC audio track after 4 attempts")


def measure(kind: str, url: str, seconds: float, server_log: Path) -> dict:
    """One take: the flash, push and tone times (ms since the epoch) after the first tone, for ``seconds``."""
    from selenium.webdriver.common.by import By

    d = browser()
    try:
        attempts = (start_fastrtc if kind == "fastrtc" else start_gradio)(d, url)
        wait(d, "the first tone", lambda: d.execute_script("return window.__probe.beeps.length"))
        start = d.execute_script("return performance.timeOrigin + performance.now()")
        time.sleep(seconds)
        probe = d.execute_script("return window.__probe")
        player = d.execute_script(  # the Live tab's page player's counters (samples), if it has one
            "const p = window.naturall2sLivePlayer; return p ? {scheduled: p.scheduled, dropped: p.dropped, "
            "gaps: p.gaps, chunks: p.chunks, faster: p.faster, arrivals: p.arrivals, clock_rate: p.started && p.ctx ? (p.ctx.currentTime - p.started[0]) "
            "/ ((performance.now() - p.started[1]) / 1000) : null} : null;")
        if kind != "fastrtc":  # end the take (the tab's worker would push the last picture on after the browser left)
            d.find_element(By.ID, "live-stop").click()
            time.sleep(3)
    finally:
        d.quit()
    pushes = [float(x) * 1000 for x in server_log.read_text().split()] if server_log.is_file() else []
    return {"kind": kind, "seconds": seconds, "start": start, "attempts": attempts, "hooked": probe["hooked"],
            "flashes": probe["flashes"], "server": pushes, "tones": probe["beeps"], "player": player}


def serve(kind: str, python: str, port: int, log: Path, before_repo: str | None = None) -> subprocess.Popen:
    """A probe server; ``gradio-before`` is the Live tab of the checkout ``before_repo``."""
    env = {**os.environ, "PROBE_LOG": str(log), "OMP_NUM_THREADS": "1"}
    if kind == "gradio-before":
        env["LIVE_TAB_REPO"] = str(Path(before_repo).resolve())
    server_kind = "fastrtc" if kind == "fastrtc" else "gradio"
    proc = subprocess.Popen([python, str(HERE / "probe_servers.py"), server_kind, str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 300
    while time.time() < end:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200:
                return proc
        except OSError:
            time.sleep(2)
    proc.terminate()
    raise TimeoutError(f"the {kind} server did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (not its children: Gradio's ffmpeg encoders are apart)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pythons = {"gradio": sys.executable, "gradio-before": sys.executable, "fastrtc": args.fastrtc_python}
    if "fastrtc" in args.kinds and not args.fastrtc_python:
        raise SystemExit("fastrtc needs --fastrtc-python")
    if "gradio-before" in args.kinds and not args.before_repo:
        raise SystemExit("gradio-before needs --before-repo")
    for r in range(1, args.rounds + 1):
        for i, kind in enumerate(args.kinds):
            port, log = args.port + len(args.kinds) * r + i, out / f"{kind}_{r}.pushes"
            log.unlink(missing_ok=True)
            proc = serve(kind, pythons[kind], port, log, before_repo=args.before_repo)
            try:
                load = os.getloadavg()
                result = measure(kind, f"http://127.0.0.1:{port}/", args.seconds, log)
                result |= {"round": r, "load_average": load, "server_cpu_seconds": cpu_seconds(proc.pid)}
            except TimeoutError as e:
                result = {"kind": kind, "round": r, "error": str(e)}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            (out / f"{kind}_{r}.json").write_text(json.dumps(result, indent=1))
            print(json.dumps({k: len(v) if isinstance(v, list) else v for k, v in result.items()}), flush=True)


def events(result: dict) -> list[tuple[float, float, float]]:
    """(push time, uplink, downlink) ms per flash: each push of a bright picture with the flash drawn before it and the
    first tone after it; a push whose tone never came (the next push came first) is left out."""
    import numpy as np

    flashes, pushes, tones = (np.array(sorted(result[k])) for k in ("flashes", "server", "tones"))
    out = []
    for p in pushes:
        before, after, later = flashes[flashes < p], tones[tones > p], pushes[pushes > p]
        if len(before) and len(after) and not (len(later) and after[0] > later[0]):
            out.append((p, p - before[-1], after[0] - p))
    return out


def report(args) -> None:
    """Per take: the totals, the drift (median total of the last minute - of the first minute); per kind: median and
    p95 of total, uplink and downlink, and the mean drift."""
    import numpy as np

    parts: dict[str, dict[str, list[float]]] = {}
    for path in args.files:
        result = json.loads(Path(path).read_text())
        if "error" in result:
            print(f"{path}: {result['error']}")
            continue
        got = events(result)
        row = parts.setdefault(result["kind"], {"total": [], "uplink": [], "downlink": [], "drift": []})
        for _, up, down in got:
            row["total"].append(up + down), row["uplink"].append(up), row["downlink"].append(down)
        drift = ""
        if got:
            t0, t1 = got[0][0], got[-1][0]
            first = [u + d for t, u, d in got if t < t0 + 60_000]
            last = [u + d for t, u, d in got if t > t1 - 60_000]
            if t1 - t0 >= 90_000:  # the two minutes are apart enough to say something
                row["drift"].append(np.median(last) - np.median(first))
                drift = f", first minute {np.median(first):.0f} ms, last minute {np.median(last):.0f} ms"
        player = result.get("player")
        heard = (f", page player: {player['scheduled'] / 16000:.1f} s scheduled, {player['dropped'] / 16000:.2f} s "
                 f"dropped, {player['gaps']} chunks missing of {player['chunks']}"
                 + (f", {player['faster'] / 16000:.1f} s played faster" if player.get("faster") is not None else "")
                 + (f", audio clock {player['clock_rate']:.3f} x real time" if player.get("clock_rate") else "")
                 ) if player else ""
        print(f"{path}: load {result['load_average'][0]:.1f}, server CPU {result['server_cpu_seconds']:.0f} s, "
              f"{len(result['flashes'])} flashes, {len(got)} paired{drift}{heard}; totals (s): "
              f"{' '.join(f'{u / 1000 + d / 1000:.2f}' for _, u, d in got)}")
    for kind, row in parts.items():
        drift = row.pop("drift")
        print(kind, ", ".join(f"{k} median {np.median(v):.0f} ms, p95 {np.percentile(v, 95):.0f} ms (n={len(v)})"
                              for k, v in row.items()),
              f"; drift (last - first minute) mean {np.mean(drift):+.0f} ms over {len(drift)} takes" if drift else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="alternate the two servers and measure (writes one json per take)")
    p.add_argument("--kinds", nargs="+", default=["gradio", "fastrtc"], choices=["gradio", "gradio-before", "fastrtc"],
                   help="servers to alternate (default: %(default)s); gradio-before: the Live tab of --before-repo")
    p.add_argument("--fastrtc-python", help="a Python with fastrtc installed (gradio<6), for the fastrtc kind")
    p.add_argument("--before-repo", help="a checkout of the repository (its naturall2s/) for the gradio-before kind")
    p.add_argument("--seconds", type=float, default=180, help="take length after the first tone (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="takes of each (default: %(default)s)")
    p.add_argument("--port", type=int, default=7870, help="first port (default: %(default)s)")
    p.add_argument("--out", default="results/live/transport", help="folder of the jsons (default: %(default)s)")
    p = sub.add_parser("report", help="median / p95 of the total, uplink and downlink latency; drift per take")
    p.add_argument("files", nargs="+", help="jsons of `run`")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
