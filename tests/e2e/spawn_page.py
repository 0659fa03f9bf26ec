"""Drives JSP's spawn page on the real hub in headless Debian Chromium (Playwright), for
test_spawn_page.py. Runs in the Playwright virtualenv (hub/launcher-ui/smoke/venv), not in the
e2e one, and reuses the smoke check's browser pieces (drive.py).

    python spawn_page.py HUB_URL USER PASSWORD SCREENSHOT_DIR pick IMAGE_ID SIZE NAME=VALUE
    python spawn_page.py HUB_URL USER PASSWORD SCREENSHOT_DIR look

`pick` logs in, reads the images and sizes the page lists, picks the image (its radio id, the
repository) and the size, adds the env var and presses Start, then waits for the page's success
message. `look` logs in and reports what the page preselects. Both print a JSON summary; on any
failure the page's screenshot is saved in SCREENSHOT_DIR and the exit status is 1.
"""

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub" / "launcher-ui" / "smoke"))
from drive import add_env, chromium, record_calls  # noqa: E402


def login(page, hub, user, password):
    page.goto(f"{hub}/hub/login")
    page.locator("#username_input").fill(user)
    page.locator("#password_input").fill(password)
    page.locator("#login_submit").click()
    page.wait_for_url(lambda url: "/hub/login" not in url)


def open_spawn_page(page, hub):
    page.goto(f"{hub}/hub/spawn")
    page.get_by_text("Start a notebook server").wait_for()
    page.locator(".jsp-spawner__image-options__image").first.wait_for()
    page.get_by_text("Container size").wait_for()
    page.get_by_text("Environment variables").wait_for()
    page.wait_for_timeout(1000)  # the page settles its preselection (and saves it)


def size_toggle(page):
    return page.locator(".jsp-spawner__size_options__select").first.locator("button").first


def state(page):
    names = page.get_by_label("Variable name").evaluate_all("els => els.map(e => e.value)")
    values = page.get_by_label("Variable value").evaluate_all("els => els.map(e => e.value)")
    return {
        "images": page.locator("input[type=radio]").evaluate_all("els => els.map(e => e.id)"),
        "checked_image": page.locator("input[type=radio]:checked").get_attribute("id"),
        "size": size_toggle(page).inner_text().strip(),
        "env": dict(zip(names, values)),
    }


def pick(page, image, size, env):
    summary = state(page)
    size_toggle(page).click()
    items = page.locator("button.pf-c-select__menu-item")
    summary["sizes"] = [t.split("\n")[0].strip() for t in items.all_inner_texts()]
    items.filter(has_text=size).first.click()
    page.locator(f'input[type=radio][id="{image}"]').check()
    name, value = env.split("=", 1)
    add_env(page, name, value)
    page.wait_for_timeout(1000)  # the page saves on change and on blur, without telling
    page.get_by_role("button", name="Start Server").click()
    page.get_by_text("The notebook server is up and running").wait_for(timeout=240_000)
    return summary


def main():
    hub, user, password, shots, action, *rest = sys.argv[1:]
    summary = {"errors": [], "console": []}
    with chromium() as context:
        page = context.new_page()
        summary["calls"] = record_calls(page)
        page.on("pageerror", lambda e: summary["errors"].append(str(e)))
        page.on("console", lambda m: m.type == "error" and summary["console"].append(m.text))
        try:
            login(page, hub, user, password)
            open_spawn_page(page, hub)
            summary.update(pick(page, *rest) if action == "pick" else state(page))
            status = 0
        except Exception:  # report what the page showed
            summary["failure"] = traceback.format_exc()
            status = 1
        shot = Path(shots) / f"{user}-{action}{'-failed' if status else ''}.png"
        page.screenshot(path=str(shot), full_page=True)
        summary["screenshot"] = str(shot)
    print(json.dumps(summary))
    sys.exit(status)


if __name__ == "__main__":
    main()
