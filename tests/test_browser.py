"""The studio in a real browser: headless Chromium driven by Selenium, its camera a fake device fed from a GRID clip.

Checks that the Live tab plays speech made from the camera, that the main tab's upload -> Synthesize fills every
system's player and the metrics table, and that an A/B vote is counted. Needs Debian's ``chromium`` and
``chromium-driver`` (``.ci/run`` installs them): without them the tests skip, except under ``CI=true``, where they fail.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IN_CI

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 240  # the longest wait for one step (a loaded 2-core machine, every model)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                  "--window-size=1400,1800"]


def _need(what: str, found) -> None:
    if found:
        return
    msg = f"{what} is not installed (Debian: apt-get install chromium chromium-driver; pip install selenium)"
    if IN_CI:
        pytest.fail("CI=true but " + msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser_tools() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    _need("chromium", chromium)
    _need("chromedriver", driver)
    try:
        import selenium  # noqa: F401
    except ImportError:
        _need("selenium", None)
    return chromium, driver


@pytest.fixture(scope="module")
def fake_camera(grid_clip, tmp_path_factory) -> Path:
    """A y4m of the clip (Chromium's fake camera plays it in a loop), made here: no clip is committed."""
    from naturall2s.video import ffmpeg_exe

    out = tmp_path_factory.mktemp("camera") / "clip.y4m"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(grid_clip), "-pix_fmt", "yuv420p",
                    "-f", "yuv4mpegpipe", str(out)], check=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(browser_tools, grid_root, tmp_path_factory):
    """``app.py`` in a process of its own (as a user starts it; Gradio's process-wide state stays out of this one)."""
    import sys
    import urllib.request

    import naturall2s

    names = naturall2s.available_models()
    if not names:
        pytest.skip("no shipped checkpoints in checkpoints/")
    work = tmp_path_factory.mktemp("browser-app")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                             "--votes", str(work / "votes.sqlite"), "--jobs", str(work / "jobs.sqlite"),
                             "--examples", str(grid_root), "--cache", str(work / "cache"), "--scoring-workers", "1"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 2 * WAIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited ({proc.returncode}): {(work / 'app.log').read_text()[-2000:]}")
            try:
                if urllib.request.urlopen(url, timeout=10).status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"app.py did not serve {url}: {(work / 'app.log').read_text()[-2000:]}")
            time.sleep(2)
        yield type("Served", (), {"url": url, "votes": work / "votes.sqlite", "names": names})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def driver(browser_tools, fake_camera, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_tools
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={fake_camera}",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=Service(chromedriver))
    yield d
    d.quit()


def _wait(what: str, check, driver, *, timeout: float = WAIT_S, shot: Path | None = None):
    """Poll ``check()`` until it returns something truthy; fail with ``what`` (and a screenshot) at the timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
        except Exception as e:  # the element is not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(1.0)
    if shot is not None:
        driver.save_screenshot(str(shot))
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def _open_tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    tab = _wait(f"the {name} tab", lambda: [b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                             if b.text.strip() == name], driver)
    tab[0].click()


def test_live_tab_plays_speech_from_the_camera(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get(server.url)
    _open_tab(driver, "Live")
    _wait("the webcam button", lambda: driver.find_element(
        By.CSS_SELECTOR, "#live-camera div[title='grant webcam access'] button"), driver).click()
    record = _wait("the camera's Record button", lambda: [b for b in driver.find_elements(
        By.CSS_SELECTOR, "#live-camera button") if b.text.strip() == "Record"], driver, shot=tmp_path / "live.png")
    record[0].click()
    driver.find_element(By.ID, "live-listen").click()
    player = _wait("the page's player to play speech", lambda: driver.execute_script(  # naturall2s/studio/live.py
        "const p = window.naturall2sLivePlayer;"
        "return p && p.ctx && p.ctx.state === 'running' && p.ctx.currentTime > 0.5 && p.scheduled > 8000 ?"
        " {scheduled: p.scheduled, dropped: p.dropped, gaps: p.gaps, chunks: p.chunks} : null;"),
        driver, shot=tmp_path / "live.png")
    assert player["scheduled"] > 8000 and player["chunks"] > 0, player  # over 0.5 s of speech handed to Web Audio
    assert "Listening" in driver.find_element(By.ID, "live-player").text
    crop = driver.find_element(By.CSS_SELECTOR, "#live-roi img")
    assert crop.get_attribute("src")  # the mouth crop is shown
    words = driver.find_element(By.CSS_SELECTOR, "#live-words textarea").get_attribute("value")
    driver.find_element(By.ID, "live-stop").click()
    _wait("the take's wav and dubbed video", lambda: driver.execute_script(
        "const v = document.querySelector('#live-dubbed video');"
        "return document.querySelector('#live-take').innerHTML.includes('live_take.wav') && v && v.src"
        " && v.src.includes('live_dubbed');"), driver, shot=tmp_path / "live_stop.png")
    status = _wait("the take's summary", lambda: driver.find_element(By.ID, "live-status").text
                   if "latency median" in driver.find_element(By.ID, "live-status").text else None, driver)
    assert "real-time factor" in status and words, (status, words)


def test_main_tab_synthesizes_every_system(server, driver, grid_clip, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get(server.url)
    _open_tab(driver, "Synthesize & compare")
    upload = _wait("the video upload", lambda: driver.find_element(By.CSS_SELECTOR, "input[type=file][accept*='video']"),
                   driver)
    upload.send_keys(str(grid_clip))
    _wait("the uploaded video", lambda: driver.execute_script(
        "return [...document.querySelectorAll('video')].some(v => v.src && v.src.includes('bbbmzn') || v.src);"),
        driver)
    run = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Synthesize"][0]
    _wait("the Synthesize button to be enabled", lambda: run.is_enabled(), driver)
    run.click()
    names = server.names
    n_rows = len(names) + 1  # every system and the reference

    def filled():
        cols = [c for c in driver.find_elements(By.CSS_SELECTOR, ".system-col") if c.is_displayed()]
        players = [c for c in cols if driver.execute_script(  # a player with its wav (the download link names it)
            "return arguments[0].innerHTML.includes('.wav');", c)]
        table = driver.execute_script(  # the visible metrics table (a virtual table: its rows live in .table-wrap)
            "const t = [...document.querySelectorAll('.table-wrap')]"
            ".find(t => t.offsetParent !== null && t.innerText.includes('Lip-read text'));"
            "return t ? t.innerText : '';")
        body = table.split("RTF", 1)[-1]  # after the header row
        rows = sum(bool(re.search(rf"(^|\s){re.escape(name)}(\s|$)", body)) for name in [*names, "Reference"]) \
            if re.search(r"\d\.\d\d", body) else 0  # a row per system (and the reference) with scores in it
        headers = " ".join(c.text for c in cols)
        return len(players) >= n_rows and rows >= n_rows and all(n in headers for n in names)

    _wait(f"{n_rows} filled players and table rows", filled, driver, shot=tmp_path / "main.png")


def test_an_ab_vote_is_counted(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    from naturall2s.studio.ab_store import VoteStore

    before = len(VoteStore(server.votes).votes())
    driver.get(server.url)
    _open_tab(driver, "A/B listening test")
    [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "New pair"][0].click()
    _wait("both A/B samples", lambda: driver.execute_script(  # the players name their files (neutral names)
        "const h = document.body.innerHTML; return h.includes('sample_A.wav') && h.includes('sample_B.wav');"),
        driver, shot=tmp_path / "ab.png")
    label = _wait("the preference A", lambda: [lab for lab in driver.find_elements(By.CSS_SELECTOR, "label")
                                               if lab.text.strip() == "A" and lab.is_displayed()], driver)
    label[0].click()
    [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Submit vote"][0].click()
    _wait("the vote's reveal", lambda: "saved" in driver.find_element(By.TAG_NAME, "body").text, driver,
          shot=tmp_path / "ab_vote.png")
    votes = VoteStore(server.votes).votes()
    assert len(votes) == before + 1 and votes[-1].preference == "A"
