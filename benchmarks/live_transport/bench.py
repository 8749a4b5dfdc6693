"""Frame-to-audio latency of the Live tab's transport (Gradio 6 streaming, naturall2s/studio/live.py) against a
minimal fastrtc (WebRTC) equivalent, in headless Chromium; docs/live.md, "Gradio streaming or fastrtc".

    nice -n 5 python benchmarks/live_transport/bench.py run --fastrtc-python VENV/bin/python \\
        --seconds 180 --rounds 3 --out results/live/transport
    python benchmarks/live_transport/bench.py report results/live/transport/*.json

fastrtc needs gradio<6, so its server runs under another Python (``--fastrtc-python``: a venv with ``pip install
fastrtc``); the Gradio server and this script run in the project's venv (selenium, Debian's chromium and
chromium-driver).

Method. Both servers (``probe_servers.py``) push the newest camera picture every 1/25 s into the same probe instead of
the model (a bright picture -> 40 ms of a 1 kHz tone, a dark one -> silence), so only the transport differs; the
model's own latency is measured apart (bench_live.py). In the browser, ``probe.js`` replaces the camera by a canvas
drawn at 25 fps, black but white for 0.4 s every 12 s, and watches the audio that comes back in Web Audio (Gradio's
streaming player through a MediaElementSource; fastrtc's WebRTC track through a MediaStreamSource). Each white flash
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
        attempts = (start_gradio if kind == "gradio" else start_fastrtc)(d, url)
        wait(d, "the first tone", lambda: d.execute_script("return window.__probe.beeps.length"))
        start = d.execute_script("return performance.timeOrigin + performance.now()")
        time.sleep(seconds)
        probe = d.execute_script("return window.__probe")
        if kind == "gradio":  # end the take (the tab's worker would push the last picture on after the browser left)
            d.find_element(By.ID, "live-stop").click()
            time.sleep(3)
    finally:
        d.quit()
    pushes = [float(x) * 1000 for x in server_log.read_text().split()] if server_log.is_file() else []
    return {"kind": kind, "seconds": seconds, "start": start, "attempts": attempts, "hooked": probe["hooked"],
            "flashes": probe["flashes"], "server": pushes, "tones": probe["beeps"]}


def serve(kind: str, python: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PROBE_LOG": str(log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([python, str(HERE / "probe_servers.py"), kind, str(port)], env=env,
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
    pythons = {"gradio": sys.executable, "fastrtc": args.fastrtc_python}
    for r in range(1, args.rounds + 1):
        for i, kind in enumerate(("gradio", "fastrtc")):
            port, log = args.port + 2 * r + i, out / f"{kind}_{r}.pushes"
            log.unlink(missing_ok=True)
            proc = serve(kind, pythons[kind], port, log)
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


def events(result: dict) -> list[tuple[float, float]]:
    """(uplink, downlink) ms per flash: each push of a bright picture with the flash drawn before it and the first tone
    after it; a push whose tone never came (the next push came first) is left out."""
    import numpy as np

    flashes, pushes, tones = (np.array(sorted(result[k])) for k in ("flashes", "server", "tones"))
    out = []
    for p in pushes:
        before, after, later = flashes[flashes < p], tones[tones > p], pushes[pushes > p]
        if len(before) and len(after) and not (len(later) and after[0] > later[0]):
            out.append((p - before[-1], after[0] - p))
    return out


def report(args) -> None:
    import numpy as np

    parts: dict[str, dict[str, list[float]]] = {}
    for path in args.files:
        result = json.loads(Path(path).read_text())
        if "error" in result:
            print(f"{path}: {result['error']}")
            continue
        got = events(result)
        row = parts.setdefault(result["kind"], {"total": [], "uplink": [], "downlink": []})
        for up, down in got:
            row["total"].append(up + down), row["uplink"].append(up), row["downlink"].append(down)
        print(f"{path}: load {result['load_average'][0]:.1f}, server CPU {result['server_cpu_seconds']:.0f} s, "
              f"{len(result['flashes'])} flashes, {len(got)} paired; totals (s): "
              f"{' '.join(f'{u / 1000 + d / 1000:.2f}' for u, d in got)}")
    for kind, row in parts.items():
        print(kind, ", ".join(f"{k} median {np.median(v):.0f} ms, p95 {np.percentile(v, 95):.0f} ms (n={len(v)})"
                              for k, v in row.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="alternate the two servers and measure (writes one json per take)")
    p.add_argument("--fastrtc-python", required=True, help="a Python with fastrtc installed (gradio<6)")
    p.add_argument("--seconds", type=float, default=180, help="take length after the first tone (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="takes of each (default: %(default)s)")
    p.add_argument("--port", type=int, default=7870, help="first port (default: %(default)s)")
    p.add_argument("--out", default="results/live/transport", help="folder of the jsons (default: %(default)s)")
    p = sub.add_parser("report", help="median / p95 of the total, uplink and downlink latency")
    p.add_argument("files", nargs="+", help="jsons of `run`")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
