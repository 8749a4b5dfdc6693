"""Screenshots of the studio: a finished comparison → assets/studio.png, the Add-a-speaker tab →
assets/studio_add_speaker.png.

The clip's own pictures (the mouth-crop video and frames) are covered before the photograph: the corpus's clips, and
anything cut from them, are not redistributed with the project.

    python benchmarks/screenshot_studio.py [--clip CLIP.mp4] [--models NAME ...] [--jobs JOBS.sqlite]

Runs one synthesis on a GRID test clip in this process, starts the studio with that result preloaded (shown
when the page opens), and photographs the page with headless Chromium (Debian package ``chromium``).
``--untrained`` builds fresh, untrained models of every variant instead of loading checkpoints (layout
checks before any checkpoint exists; their audio is noise).
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_studio import default_clip, free_port  # noqa: E402  (benchmarks/ is not a package)

WINDOW = (1400, 3300)
READY_JS = "document.body.innerText.includes('Lip-read:')"  # the preloaded result is on screen
READY_TIMEOUT_S = 120.0
SETTLE_S = 5.0  # after READY_JS: let the plots' images decode and layout settle
HIDE_FRAMES_CSS = """
  #roi-video, #roi-strip { position: relative; }
  #roi-video::after, #roi-strip::after { content: "frames of the clip are not shown in this picture";
    position: absolute; inset: 0; z-index: 100; background: #e5e7eb; color: #4b5563; display: flex;
    align-items: center; justify-content: center; font: 14px sans-serif; }"""
HIDE_FRAMES_JS = ("(() => { const s = document.createElement('style'); s.textContent = %s; "
                  "document.head.appendChild(s); return document.querySelectorAll('#roi-video, #roi-strip').length; })()"
                  % json.dumps(HIDE_FRAMES_CSS))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


class PipeBrowser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (DevTools protocol; fds 3 and 4, NUL-framed
    JSON), so no extra Python package is needed."""

    def __init__(self, chromium: str, user_data_dir: Path):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire():  # in the child: its fd 3 reads our commands, its fd 4 carries the replies
            r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.session = None

    def _read_message(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        """One DevTools command; returns its result (events in between are skipped)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def wait_for(self, expression: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            if r.get("result", {}).get("value") is True:
                return True
            time.sleep(0.5)
        return False

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_child)
        os.close(self._from_child)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("headless Chromium not found: apt-get update && apt-get install -y chromium")


def build_studio(models: list[str] | None, untrained: bool, cache: Path):
    from naturall2s.studio.pipeline import Studio, load_studio

    if not untrained:
        return load_studio(models, cache_dir=cache)
    from naturall2s.model import VARIANTS, build

    from naturall2s.asr import get_asr
    from naturall2s.landmarks import get_detector
    from naturall2s.speaker import get_speaker_encoder

    nets = {v: build(v).eval() for v in (models or VARIANTS)}
    return Studio(nets, detector=get_detector("auto"), asr=get_asr("auto", grammar=None),
                  grid_asr=get_asr("auto", grammar="grid"), speaker_encoder=get_speaker_encoder("auto"),
                  cache_dir=cache)


def click_tab(browser: PipeBrowser, label: str) -> None:
    browser.send("Runtime.evaluate", {"expression": (
        "[...document.querySelectorAll('button[role=tab]')].find(b => b.innerText.includes(%s)).click()"
        % json.dumps(label))})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=None, help="clip to synthesize (default: the first GRID test clip)")
    ap.add_argument("--models", nargs="+", default=None, help="systems (default: every available model)")
    ap.add_argument("--untrained", action="store_true", help="fresh untrained models (no checkpoints needed)")
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "studio.png", help="default: %(default)s")
    ap.add_argument("--speaker-out", type=Path, default=REPO / "assets" / "studio_add_speaker.png",
                    help="screenshot of the Add-a-speaker tab (default: %(default)s)")
    ap.add_argument("--jobs", type=Path, default=None,
                    help="job database to show in the Add-a-speaker tab (default: an empty one)")
    args = ap.parse_args()
    chromium = find_chromium()
    clip = args.clip or default_clip()

    from naturall2s.studio import enroll
    from naturall2s.studio.ab_store import VoteStore
    from naturall2s.studio.jobs import JobRunner, JobStore
    from naturall2s.studio.ui import find_examples, serve

    with tempfile.TemporaryDirectory(prefix="naturall2s-shot-") as tmp:
        tmp = Path(tmp)
        studio = build_studio(args.models, args.untrained, tmp / "cache")
        t0 = time.perf_counter()
        result = studio.run(clip)
        print(f"synthesized {clip.name} with {', '.join(studio.system_names)} in {time.perf_counter() - t0:.1f} s")
        examples = find_examples(clip.parents[1]) if (clip.parents[1] / "splits.json").exists() else [clip]
        jobs = JobRunner(JobStore(args.jobs or tmp / "jobs.sqlite"), enroll.adapt_work, start=False)
        demo, url = serve(studio, votes=VoteStore(tmp / "votes.sqlite"), examples=examples, jobs=jobs,
                          port=free_port(), prevent_thread_lock=True, quiet=True, preload=result)
        browser = PipeBrowser(chromium, tmp / "chromium")
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            browser.open(url)
            if not browser.wait_for(READY_JS, READY_TIMEOUT_S):
                print("the result did not appear in the page in time", file=sys.stderr)
                return 1
            time.sleep(SETTLE_S)
            covered = browser.send("Runtime.evaluate", {"expression": HIDE_FRAMES_JS, "returnByValue": True})
            if covered.get("result", {}).get("value") != 2:
                print(f"the clip's frames could not be covered ({covered}): no screenshot", file=sys.stderr)
                return 1
            time.sleep(1.0)
            browser.screenshot(args.out)
            click_tab(browser, "Add a speaker")
            if not browser.wait_for("document.body.innerText.includes('Progress log')", READY_TIMEOUT_S):
                print("the Add-a-speaker tab did not open", file=sys.stderr)
                return 1
            time.sleep(SETTLE_S)
            browser.screenshot(args.speaker_out)
        finally:
            browser.close()
            demo.close()
            studio.close()
    print(f"wrote {args.out} and {args.speaker_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
