"""A throwaway loopback stand-in for the hub and JSP's API, for the smoke check only.

It renders the built spawn.html with Jinja2 over a stub of JupyterHub's page.html, serves the
bundle's static files and answers the UI's calls with canned data in JSP 0.7.0's shapes. It is
NOT a test of record and not a model of the real service: the browser test drives the real
hub and the real service.

Usage: python fake_hub.py BUILD_DIR PORT   (BUILD_DIR is what hub/launcher-ui/build printed)
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

USER = "alice"
API = "/services/jsp-api/api/"

# Just what spawn.html needs from the hub's page.html: window.jhdata and a `main` block.
PAGE_STUB = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>stub hub page</title>
<script>window.jhdata = {base_url: "/hub/", prefix: "/", user: "{{ user.name }}",
  admin_access: false, options_form: true, xsrf_token: "{{ xsrf_token }}"};</script>
</head><body>{% block main %}{% endblock %}</body></html>"""


def tag(name, default=False, recommended=False, software=(), dependencies=()):
    return {
        "name": name,
        "content": {
            "software": [{"name": n, "version": v} for n, v in software],
            "dependencies": [{"name": n, "version": v} for n, v in dependencies],
        },
        "recommended": recommended,
        "build_status": "Unknown",
        "default": default,
    }


IMAGES = [
    {
        "name": "ray-ml-notebook",
        "tags": [tag("2.60.0", default=True, software=[("Python", "v3.11"), ("Ray", "v2.60.0")],
                     dependencies=[("XGBoost", "3.2.0")])],
        "description": "Notebook with Ray; every server gets its own Ray cluster",
        "url": None,
        "display_name": "Ray ML notebook",
        "order": 10,
    },
    {
        "name": "minimal-notebook",
        "tags": [tag("py3.11", software=[("Python", "v3.11")])],
        "description": None,
        "url": None,
        "display_name": "Minimal Python",
        "order": 20,
    },
]
SIZES = [
    {"name": "Small", "resources": {"requests": {"cpu": 1, "memory": "2Gi"},
                                    "limits": {"cpu": 2, "memory": "4Gi"}}},
    {"name": "Medium", "resources": {"requests": {"cpu": 2, "memory": "4Gi"},
                                     "limits": {"cpu": 4, "memory": "8Gi"}}},
]
UI_CONFIG = {
    "gpuConfig": {"enabled": False, "type": None, "clusterGpuCount": 0,
                  "gpuCheckbox": None, "gpuDropdown": None, "gpuInput": None},
    "imageConfig": {"blacklist": [], "whitelist": [], "sort": None},
    "sizeConfig": {"enabled": True},
    "envVarConfig": {"enabled": True, "categories": [
        {"name": "AWS", "variables": [{"name": "AWS_ACCESS_KEY_ID", "type": "password"},
                                      {"name": "AWS_SECRET_ACCESS_KEY", "type": "password"}]}]},
}
# As a user ConfigMap left from an image that is no longer offered: the UI then asks for the
# default image.
settings = {"env": [], "gpu": "0", "last_selected_image": "old-notebook:v1",
            "last_selected_size": ""}


class Handler(BaseHTTPRequestHandler):
    build: Path
    templates: jinja2.Environment

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_hub: " + fmt % args + "\n")

    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ("/hub/spawn", f"/hub/spawn/{USER}"):
            page = self.templates.get_template("spawn.html").render(
                user={"name": USER}, for_user={"name": USER}, xsrf_token="smoke-xsrf",
                url="/hub/spawn?_xsrf=smoke-xsrf", error_message="")
            return self.send(200, page, "text/html; charset=utf-8")
        if path.startswith("/hub/static/jsp-ui/"):
            file = (self.build / "static" / path.removeprefix("/hub/static/jsp-ui/")).resolve()
            if self.build in file.parents and file.is_file():
                ctype = {".js": "application/javascript", ".css": "text/css",
                         ".svg": "image/svg+xml", ".json": "application/json"}.get(
                             file.suffix, "application/octet-stream")
                return self.send(200, file.read_bytes(), ctype)
            return self.send(404, "not found", "text/plain")
        if path == f"/hub/api/users/{USER}":
            return self.send(200, {"name": USER, "admin": False, "pending": None, "server": None})
        if path == f"/hub/api/users/{USER}/server/progress":
            return self.progress()
        api = {
            "user/configmap": lambda: settings,
            "ui/config": lambda: UI_CONFIG,
            "images": lambda: IMAGES,
            "images/default": lambda: "ray-ml-notebook:2.60.0",
            "sizes": lambda: [s["name"] for s in SIZES],
        }
        if path.startswith(API):
            target = path.removeprefix(API)
            if target in api:
                return self.send(200, api[target]())
            if target.startswith("size/"):
                size = next((s for s in SIZES if s["name"] == target.removeprefix("size/")), None)
                return self.send(200, size) if size else self.send(404, "Not Found", "text/plain")
        return self.send(404, {"message": f"no canned answer for GET {path}"})

    def do_POST(self):
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == API + "user/configmap":
            data = json.loads(body or b"{}")
            settings.update(data)
            return self.send(200, settings)
        if path == f"/hub/api/users/{USER}/server":
            return self.send(202, b"", "text/plain")
        return self.send(404, {"message": f"no canned answer for POST {path}"})

    def progress(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for event in ({"progress": 50, "message": "preparing the Ray cluster"},
                      {"progress": 100, "ready": True, "message": "Server ready at /user/alice/",
                       "url": f"/user/{USER}/"}):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.3)


def main():
    build, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    Handler.build = build
    Handler.templates = jinja2.Environment(
        autoescape=True,  # as JupyterHub renders its templates
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(build / "templates"),
                                    jinja2.DictLoader({"page.html": PAGE_STUB})]))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"fake_hub: serving {build} on http://127.0.0.1:{port}/hub/spawn", file=sys.stderr,
          flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
