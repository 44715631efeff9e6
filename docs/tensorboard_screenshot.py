"""Render TensorBoard headless and save a screenshot of scalars and the test confusion matrix.

    python docs/tensorboard_screenshot.py lightning_logs --out docs

Needs Chromium (Debian: apt-get install chromium) and the playwright Python package
(pip install playwright; no browser download: it drives /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"TensorBoard did not answer at {url} within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", help="folder with the runs, e.g. lightning_logs")
    parser.add_argument("--out", default="docs", help="folder for the PNG files")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--filter", default="val/acc|train/loss_epoch|test/confusion_matrix",
                        help="regex of the tags to show")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--port", str(port), "--bind_all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 600}, device_scale_factor=1)
            page.goto(f"{url}/?darkMode=false#timeseries", wait_until="networkidle")
            page.wait_for_timeout(3000)
            for label in ("Close settings", "Close"):
                button = page.get_by_role("button", name=label)
                if button.count():
                    button.first.click()
                    break
            page.fill("input[placeholder*='Filter tags']", args.filter)
            page.keyboard.press("Escape")  # close the tag suggestions
            page.mouse.click(700, 950)
            page.wait_for_timeout(6000)  # charts draw after the data arrives
            page.screenshot(path=str(out / "tensorboard.png"))
            browser.close()
    finally:
        board.terminate()
        board.wait()
    print(f"wrote {out / 'tensorboard.png'}")


if __name__ == "__main__":
    main()
