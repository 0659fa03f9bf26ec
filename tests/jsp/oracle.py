"""Runs JSP 0.7.0's own spawn path on a scenario's ConfigMap files and reports what it did.

Reads `{"scenarios": [...]}` (see runner.py) as JSON on stdin, writes `{key: result}` as JSON on
stdout. Only JSP's Kubernetes I/O is replaced (fakekube.py, at the kubernetes client's REST layer);
the calls below are the ones ODH's `jupyterhub_config.py` made (opendatahub-io/jupyterhub-odh and
red-hat-data-services/jupyterhub-odh, 2021-2022):

1. the spawn page (JSP's own UI) POSTs the user's choices to JSP's API, one field at a time
   (`{"last_selected_image"}`, `{"last_selected_size"}`, `{"gpu": <int>}`, `{"env": [...]}`),
   which calls `User.update` and writes `jupyterhub-singleuser-profile-<user>` (and `-envs`);
2. `OpenShiftSpawner.options_from_form`: `user.get()` gives the size (and GPU count);
3. `pre_spawn_hook` (`setup_environment`): the image from `user.get()['last_selected_image']`,
   `load_profiles(username=...)`, `setup_services(spawner, image, user)`;
4. KubeSpawner builds the pod with `spawner.environment` as its env;
5. `modify_pod_hook` (`apply_pod_profile`): `load_profiles(username=...)`,
   `get_merged_profile(image, user=..., size=...)`, `SingleuserProfiles.apply_pod_profile(user,
   pod, profile, gpu_types, '/opt/app-root/src', gpu_mode)`.

JupyterHub's and KubeSpawner's own env vars, labels and volumes are not part of the pod built in
step 4, so the result holds exactly what JSP added.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

import yaml

import fakekube

DEFAULT_MOUNT_PATH = "/opt/app-root/src"  # ODH's jupyterhub_config.py
NODE = {  # one roomy node, for JSP's size "schedulable" check (Sizes.add_label)
    "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {}},
    "status": {"capacity": {"cpu": "64", "memory": "256Gi"}, "allocatable": {"cpu": "64", "memory": "256Gi"}},
}
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "https://fake-apiserver.invalid:6443"}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
"""


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        if record.name.startswith("jupyterhub_singleuser_profiles"):
            self.lines.append(f"{record.levelname} {record.name.rsplit('.', 1)[-1]}: {record.getMessage()}")


def configmaps_of(folder: Path) -> list[dict]:
    """The ConfigMaps of the folder's *.yaml/*.yml files, as `render` reads them."""
    found = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            items = doc.get("items", []) if doc.get("kind") in ("List", "ConfigMapList") else [doc]
            found.extend(i for i in items if i.get("kind") == "ConfigMap")
    return found


def run(scenario: dict, work: Path) -> dict:
    from kubernetes import client
    from jupyterhub_singleuser_profiles.profiles import SingleuserProfiles

    namespace = scenario["namespace"]
    cluster = fakekube.FakeCluster()
    for cm in configmaps_of(Path(scenario["dir"])):
        cluster.put(cm, namespace)
        for text in (cm.get("data") or {}).values():
            if isinstance(text, str):
                cluster.add_kinds_named_in(text)
    cluster.put(NODE, namespace)
    fakekube.install(cluster)
    # The DynamicClient keeps a discovery cache file in the temp folder: one per scenario.
    tempfile.tempdir = str(work)

    log = Captured()
    logging.getLogger().addHandler(log)
    result: dict = {"error": None, "log": log.lines}
    step = "setup"
    try:
        sanitize = client.ApiClient().sanitize_for_serialization
        username = scenario["user"]

        step = "spawn page (JSP API: POST /api/user/configmap)"
        if scenario.get("ui", True):
            api = SingleuserProfiles(namespace=namespace, verify_ssl=False)
            posts = [{"last_selected_image": scenario["image"]}]
            if scenario.get("size") is not None:
                posts.append({"last_selected_size": scenario["size"]})
            if scenario.get("gpu") is not None:
                posts.append({"gpu": scenario["gpu"]})
            if scenario.get("user_env") is not None:
                posts.append({"env": scenario["user_env"]})
            for body in posts:
                api.user.update(username, data=body)
        # The user's settings ConfigMaps as the spawn page left them: our side reads the same.
        written = {w.body["metadata"]["name"] for w in cluster.writes
                   if "/configmaps" in w.path and isinstance(w.body, dict)}
        result["user_configmaps"] = [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": o["metadata"]["name"], "labels": o["metadata"].get("labels") or {}},
             "data": o.get("data") or {}}
            for (_, plural, _, name), o in sorted(cluster.objects.items())
            if plural == "configmaps" and name in written]
        cluster.writes.clear()

        step = "OpenShiftSpawner.__init__"
        profiles = SingleuserProfiles(namespace=namespace, verify_ssl=False, gpu_mode=scenario.get("gpu_mode"))
        spawner = SimpleNamespace(
            user=SimpleNamespace(name=username), image=None, environment={}, single_user_services=[],
            single_user_profiles=profiles, gpu_mode=profiles.gpu_mode, gpu_count=0, deployment_size=None,
        )

        step = "options_from_form"
        cm_data = profiles.user.get(username)
        spawner.deployment_size = cm_data["last_selected_size"]
        spawner.gpu_count = cm_data["gpu"]

        step = "pre_spawn_hook (setup_services)"
        spawner.image = profiles.user.get(username)["last_selected_image"]
        profiles.load_profiles(username=username)
        profiles.setup_services(spawner, spawner.image, username)
        result["spawner_environment"] = dict(spawner.environment)
        result["single_user_services"] = list(spawner.single_user_services)

        step = "KubeSpawner pod"
        container = client.V1Container(
            name="notebook", image=spawner.image,
            env=[client.V1EnvVar(name=k, value=v) for k, v in spawner.environment.items()],
            resources=client.V1ResourceRequirements(limits={}, requests={}), volume_mounts=[],
        )
        pod = client.V1Pod(metadata=client.V1ObjectMeta(labels={}),
                           spec=client.V1PodSpec(containers=[container], volumes=[]))

        step = "modify_pod_hook (apply_pod_profile)"
        profiles.load_profiles(username=username)
        profile = profiles.get_merged_profile(spawner.image, user=username, size=spawner.deployment_size)
        gpu_types = profiles.get_gpu_types()
        pod = SingleuserProfiles.apply_pod_profile(username, pod, profile, gpu_types, DEFAULT_MOUNT_PATH,
                                                   spawner.gpu_mode)

        c = pod.spec.containers[0]
        result["env"] = sanitize(c.env) or []
        result["pod"] = {
            "resources": sanitize(c.resources) or {},
            "tolerations": sanitize(pod.spec.tolerations) or [],
            "affinity": sanitize(pod.spec.affinity) or {},
            "labels": sanitize(pod.metadata.labels) or {},
            "volumes": sanitize(pod.spec.volumes) or [],
            "volume_mounts": sanitize(c.volume_mounts) or [],
            "security_context": sanitize(pod.spec.security_context) or {},
        }
        result["merged_profile_name"] = profile.get("name")
    except Exception as e:  # noqa: BLE001 - every JSP failure is a result here
        result["error"] = {"step": step, "type": type(e).__name__, "message": str(e)[:500],
                           "where": traceback.extract_tb(e.__traceback__)[-1].name}
    finally:
        logging.getLogger().removeHandler(log)
    result["writes"] = [{"method": w.method, "path": w.path, "body": w.body} for w in cluster.writes]
    return result


def main() -> int:
    warnings.simplefilter("ignore")
    logging.getLogger("jupyterhub_singleuser_profiles").setLevel(logging.INFO)
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster config
    request = json.load(sys.stdin)
    out = {}
    with tempfile.TemporaryDirectory(prefix="jsp-oracle-") as top:
        kubeconfig = Path(top, "kubeconfig")
        kubeconfig.write_text(KUBECONFIG)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        for i, scenario in enumerate(request["scenarios"]):
            work = Path(top, f"s{i}")
            work.mkdir()
            out[scenario["key"]] = run(scenario, work)
    json.dump(out, sys.stdout, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
