"""The demo notebook, executed with nbclient against a real local Ray head, with the address
handed over by our service: the `local-ray` profile's templated env sets RAY_ADDRESS, the hub's
pre-spawn hook puts it into the single-user server's environment, and the notebook kernel runs
with that environment."""

from __future__ import annotations

import re
import time
from typing import Iterator

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

from e2e_support import (HERE, REPO, Hub, RayHead, Settings, iter_outputs, kubectl, ray_clusters,
                         wait_until)

NOTEBOOK = REPO / "examples" / "ray-xgboost.ipynb"


@pytest.fixture(scope="module")
def ray_head(settings: Settings) -> Iterator[RayHead]:
    head = RayHead(settings.work)
    yield head
    head.stop()


@pytest.fixture(scope="module")
def local_ray_profile(settings: Settings, service: httpx.Client, ray_head: RayHead) -> str:
    manifest = (HERE / "profiles" / "local-ray.yaml.tmpl").read_text()
    manifest = manifest.replace("@CLIENT_PORT@", str(ray_head.client_port))
    kubectl("apply", "-n", settings.namespace, "-f", "-", input=manifest)

    def visible() -> bool:  # the service watches its ConfigMaps: no restart, no API call
        answer = service.get("/api/v1/profiles", params={"user": "dana"}).json()
        return "local-ray" in [p["slug"] for p in answer["profiles"]]

    wait_until(visible, 30, "the service to load the local-ray profile")
    return "local-ray"


def test_demo_notebook_on_ray(hub: Hub, settings: Settings, ray_head: RayHead,
                              local_ray_profile: str) -> None:
    events = hub.start_server("dana", {"profile": local_ray_profile})
    assert events[-1].get("ready") is True, events
    env = hub.singleuser_env("dana")["env"]
    assert env["RAY_ADDRESS"] == ray_head.address  # the service's templated env won
    assert env["RAY_CLUSTER"] == "ray-dana"

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": env["HOME"]}})
    started = time.monotonic()
    # The kernel runs with the single-user server's environment, as JupyterHub's would.
    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        connect = next(i for i, c in enumerate(notebook.cells)
                       if c.cell_type == "code" and "ray.init(" in c.source)
        client.execute_cell(notebook.cells[connect], connect)  # re-running must not fail
    print(f"notebook executed in {time.monotonic() - started:.0f} s")

    text = "".join(o.get("text", "") for o in iter_outputs(notebook)
                   if o.get("output_type") == "stream")
    assert f"Address:     {ray_head.address}" in text
    accuracy = float(re.search(r"accuracy:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    error_rate = float(re.search(r"error rate:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    assert accuracy > 0.9, text[-2000:]
    assert abs(accuracy + error_rate - 1) < 1e-6
    images = [o for o in iter_outputs(notebook) if "image/png" in o.get("data", {})]
    assert images, "the score-vs-truth plot was not drawn"
    assert not [o for o in iter_outputs(notebook) if o.get("output_type") == "error"]

    hub.stop_server("dana")
    wait_until(lambda: not ray_clusters(settings.namespace, "dana"), 60,
               "ray-dana to be garbage-collected")
