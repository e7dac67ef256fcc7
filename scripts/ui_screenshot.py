"""Take the README's picture of the web UI (docs/ui-train.png): a real `tunestack ui` with a real run in its Train
tab, driven by headless Chromium through Playwright.

    python scripts/ui_screenshot.py                       # the embedded model learning its name, on CPU
    python scripts/ui_screenshot.py --model ./my-model --dataset data.jsonl --output /tmp/train.png

Needs `pip install 'tunestack[ui]' playwright` and a Chromium binary (`apt-get install chromium`); the run it
starts is stopped (and kept under a temporary folder) once the picture is taken.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", default="self-cognition")
    parser.add_argument("--more", default="--model_name Nova --model_author 'Acme Labs'", help="More flags field")
    parser.add_argument("--steps", type=int, default=60, help="--max_steps of the run")
    parser.add_argument("--points", type=int, default=12, help="logged steps on the loss plot before the picture")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "ui-train.png")
    args = parser.parse_args()
    chromium = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
    if chromium is None:
        sys.exit("no chromium on PATH: apt-get install chromium")
    workdir = Path(tempfile.mkdtemp(prefix="tunestack-ui-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tunestack", "ui", "--port", str(port), "--runs_dir", "runs"],
                              cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/")
        shoot(chromium, f"http://127.0.0.1:{port}/", args)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.output} (the run is in {workdir / 'runs'})")


def wait_for(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"tunestack ui did not answer at {url}")


def shoot(chromium: str, url: str, args) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.set_default_timeout(600_000)
        page.goto(url)
        page.wait_for_selector("#train-start")
        for elem, value in (("train-model", args.model), ("train-dataset", args.dataset)):
            page.locator(f"#{elem} input").fill(value)
            page.locator(f"#{elem} input").press("Enter")
            page.keyboard.press("Escape")
        page.locator("#train-max_steps input").fill(str(args.steps))
        page.click("text=More settings")
        page.locator("#train-logging_steps input").fill("1")
        page.locator("#train-more textarea, #train-more input").first.fill(args.more)
        page.click("text=More settings")  # closed again: the picture shows the run
        page.click("#train-start")
        page.wait_for_function(
            "n => { const m = /step (\\d+)/.exec(document.querySelector('#train-status').innerText);"
            " return m && Number(m[1]) >= n; }", arg=args.points)
        time.sleep(2)  # the plot and log catch up with the progress line
        args.output.parent.mkdir(parents=True, exist_ok=True)
        save_small(page.screenshot(full_page=True), args.output)
        page.click("#train-stop")
        page.wait_for_function("() => /^interrupted/.test(document.querySelector('#train-status').innerText)")
        browser.close()


def save_small(png: bytes, path: Path) -> None:
    """The page as a 256-colour PNG: a third of the size, no visible difference for a UI's flat colours."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        path, optimize=True)


if __name__ == "__main__":
    main()
