"""Headless Debian Chromium driving JSP's spawner page, through Playwright.

Reusable pieces for the browser test (which drives the real hub and service):
    with chromium() as context:         # fresh profile, no network beyond what the page asks
        page = context.new_page()
        calls = record_calls(page)      # ["GET /services/jsp-api/api/images", ...]
CLI, the smoke check against fake_hub.py:
    python drive.py URL --screenshot FILE [--add-env NAME=VALUE]... [--start] [--expect "GET /path"]...
It loads the page, waits for the image list and the size menu, optionally adds environment
variables, screenshots, optionally presses Start and waits for the success message, and prints
a JSON summary (calls made, POST bodies, console messages). Exit 1 when an expected call
is missing, the page threw, or the page did not render.
"""

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("SUP_CHROMIUM", "/usr/bin/chromium")
# Keep the browser to the page under test: nothing of Chromium's own phones home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium(executable=CHROMIUM, timeout_ms=30_000):
    """A headless Chromium context with a fresh --user-data-dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sup-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(timeout_ms)
        try:
            yield context
        finally:
            context.close()


def record_calls(page, bodies=None):
    """Requests the page makes, as "METHOD /path", in order (static files left out); the JSON
    bodies of POSTs are appended to `bodies` as (path, body) when a list is given."""
    calls = []

    def on_request(request):
        path = urlsplit(request.url).path
        if request.resource_type in ("fetch", "xhr", "eventsource", "document"):
            calls.append(f"{request.method} {path}")
            if bodies is not None and request.method == "POST" and request.post_data:
                bodies.append((path, json.loads(request.post_data)))

    page.on("request", on_request)
    return calls


def add_env(page, name, value):
    """Adds an environment variable row in the spawner form; leaving the field saves it."""
    page.get_by_role("button", name="Add more variables").click()
    page.get_by_label("Variable name").last.fill(name)
    page.get_by_label("Variable value").last.fill(value)
    page.get_by_label("Variable value").last.press("Tab")


def smoke(url, screenshot, start, expect, env):
    summary = {"url": url, "errors": [], "console": [], "posts": []}
    with chromium() as context:
        page = context.new_page()
        calls = record_calls(page, summary["posts"])
        page.on("pageerror", lambda e: summary["errors"].append(str(e)))
        page.on("console", lambda m: m.type in ("error", "warning") and
                summary["console"].append(f"{m.type}: {m.text}"))
        page.goto(url)
        page.get_by_text("Start a notebook server").wait_for()
        page.locator(".jsp-spawner__image-options__image").first.wait_for()
        page.get_by_text("Container size").wait_for()
        page.get_by_text("Environment variables").wait_for()
        summary["images"] = page.locator(".jsp-spawner__image-options__title").all_inner_texts()
        summary["checked_image"] = page.locator("input[type=radio]:checked").get_attribute("id")
        for name, value in env:
            add_env(page, name, value)
            page.wait_for_timeout(300)  # the UI saves on blur, without telling
        page.screenshot(path=screenshot, full_page=True)
        if start:
            page.get_by_role("button", name="Start Server").click()
            page.get_by_text("The notebook server is up and running").wait_for()
            page.screenshot(path=screenshot.replace(".png", "-started.png"), full_page=True)
        summary["calls"] = calls
    summary["missing"] = [c for c in expect if c not in summary["calls"]]
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--start", action="store_true", help="press Start and wait for success")
    parser.add_argument("--expect", action="append", default=[], metavar='"METHOD /path"')
    parser.add_argument("--add-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    env = [tuple(e.split("=", 1)) for e in args.add_env]
    summary = smoke(args.url, args.screenshot, args.start, args.expect, env)
    print(json.dumps(summary, indent=2))
    sys.exit(1 if summary["missing"] or summary["errors"] else 0)


if __name__ == "__main__":
    main()
