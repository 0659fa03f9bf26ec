"""The hooks against the real service binary (dry run), with JupyterHub's and KubeSpawner's
real spawner classes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest
from traitlets.config import Config

from singleuser_profiles_hub import (
    ProfilesProgressMixin,
    SingleuserProfiles,
    SpawnRefused,
    apply_answer,
    post_stop_hook,
    pre_spawn_hook,
    profile_list,
    spawn_request,
)

from singleuser_profiles_hub.hooks import apply_answer

from hub_support import TOKEN, Service, User, free_port, kube_spawner, local_spawner


# ---- a fault injector in front of the real service ----------------------------------------


class FaultProxy:
    """Forwards to the real service; the first `fail` requests get 503, each answer `delay` s."""

    def __init__(self, target: str, fail: int = 0, delay: float = 0.0) -> None:
        self.target, self.fail, self.delay, self.seen = target, fail, delay, 0
        self.rewrite: Any = None  # optional: a function of each JSON answer
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen += 1
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.seen <= proxy.fail:
                    data = json.dumps({"code": "unavailable", "message": "warming up"}).encode()
                    self.send_response(503)
                else:
                    time.sleep(proxy.delay)
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() in ("authorization", "content-type", "accept")}
                    answer = httpx.request(self.command, proxy.target + self.path,
                                           content=body, headers=headers)
                    data = answer.content
                    if proxy.rewrite is not None and answer.status_code == 200:
                        data = json.dumps(proxy.rewrite(answer.json())).encode()
                    self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(service: Service) -> Iterator[FaultProxy]:
    p = FaultProxy(service.url)
    yield p
    p.close()


def configured(url: str, **traits: Any) -> Config:
    c = Config()
    c.SingleuserProfiles.url = url
    c.SingleuserProfiles.token = TOKEN
    c.SingleuserProfiles.retry_backoff = 0.05
    for name, value in traits.items():
        setattr(c.SingleuserProfiles, name, value)
    return c


# ---- the spawn request ---------------------------------------------------------------------


def test_spawn_request_reads_user_options_and_spawner() -> None:
    spawner = local_spawner(
        "eje@redhat.com", groups=("data-science", "admins"), name="gpu",
        user_options={"profile": "ray", "size": "Small", "options": {"workers": 3},
                      "image": "quay.io/odh/ray-ml-notebook:2.60"},
    )
    assert spawn_request(spawner, namespace="team-a") == {
        "user": "eje@redhat.com",
        "groups": ["admins", "data-science"],
        "server": "gpu",
        "image": "quay.io/odh/ray-ml-notebook:2.60",
        "profile": "ray",
        "size": "Small",
        "options": {"workers": 3},
        "namespace": "team-a",
    }


async def test_spawn_request_image_fallbacks_and_no_size_choice() -> None:
    kube = kube_spawner(image="quay.io/odh/ray-notebook:1", user_options={"size": "default"})
    body = spawn_request(kube)
    assert body["image"] == "quay.io/odh/ray-notebook:1"
    assert "size" not in body  # KubeSpawner's "default" choice: the profile's own resources
    local = local_spawner(environment={"JUPYTER_IMAGE_SPEC": "ray-ml-notebook:2.60"})
    assert spawn_request(local)["image"] == "ray-ml-notebook:2.60"


async def test_jsp_spawn_page_choices_are_the_spawn_request() -> None:
    """JSP's spawn page starts the server with the user's saved settings as the body."""
    saved = {"gpu": 0, "last_selected_image": "docker.io/rayproject/ray:2.60.0-py311",
             "last_selected_size": "Medium", "env": [{"name": "A", "type": "text", "value": "1"}]}
    kube = kube_spawner(image="quay.io/jupyterhub/k8s-singleuser-sample:4", user_options=saved)
    body = spawn_request(kube)
    assert body["image"] == "docker.io/rayproject/ray:2.60.0-py311"
    assert body["size"] == "Medium"
    default = kube_spawner(user_options={**saved, "last_selected_size": "Default"})
    assert "size" not in spawn_request(default)  # the page's "Default": the profile's resources


async def test_pre_spawn_takes_the_jsp_spawn_page_image(settings_env: Service) -> None:
    spawner = kube_spawner(image="quay.io/jupyterhub/k8s-singleuser-sample:4",
                           user_options={"last_selected_image": "docker.io/rayproject/ray:2.60.0-py311",
                                         "last_selected_size": "Small"})
    await pre_spawn_hook(spawner)
    assert spawner.image == "docker.io/rayproject/ray:2.60.0-py311"
    assert spawner.cpu_limit == 1.0  # the size Small


def test_resources_are_taken_in_kubespawner_units_as_answered() -> None:
    """The service answers cores and bytes (`pod.kubespawner`); the hook parses no quantity."""
    spawner = local_spawner()
    answer = {"environment": {}, "pod": {
        "resources": {"requests": {"cpu": "ignored"}, "limits": {"memory": "ignored"}},
        "kubespawner": {"cpu_guarantee": 0.5, "cpu_limit": 2, "mem_guarantee": 536870912,
                        "mem_limit": None},
    }}
    before = spawner.mem_limit
    apply_answer(spawner, answer, logging.getLogger("test"))
    assert spawner.cpu_guarantee == 0.5 and spawner.cpu_limit == 2.0
    assert spawner.mem_guarantee == 2**29 and spawner.mem_limit == before


# ---- pre_spawn_hook --------------------------------------------------------------------------


async def test_pre_spawn_local_spawner_gets_ray_env_and_resources(settings_env: Service) -> None:
    spawner = local_spawner("alice", user_options={"profile": "ray", "size": "Medium",
                                                   "options": {"workers": 1}},
                            environment={"KEEP_ME": "1"})
    await pre_spawn_hook(spawner)
    env = spawner.environment
    assert env["RAY_ADDRESS"] == "ray://ray-alice-head-svc.default.svc:10001"
    assert env["RAY_CLUSTER"] == "ray-alice"
    assert env["RAY_DASHBOARD_URL"] == "http://ray-alice-dashboard.apps.example.com/"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"  # the globals profile's env
    assert env["KEEP_ME"] == "1"
    assert spawner.cpu_limit == 2.0 and spawner.mem_limit == 4 * 2**30  # the Medium size
    assert spawner.cpu_guarantee == 2.0 and spawner.mem_guarantee == 4 * 2**30


async def test_pre_spawn_named_server_and_namespace(service: Service) -> None:
    spawner = local_spawner("bob", name="exp-1", config=configured(service.url, namespace="ds"))
    answer = await SingleuserProfiles(parent=spawner).pre_spawn_hook(spawner)
    assert answer["dry_run"] is True and answer["namespace"] == "ds"
    assert spawner.environment["RAY_CLUSTER"] == answer["cluster"] != "ray-bob"
    assert answer["cluster"].startswith("ray-bob")
    assert spawner.environment["RAY_ADDRESS"] == f"ray://{answer['cluster']}-head-svc.ds.svc:10001"


async def test_pre_spawn_kubespawner_pod_settings(service: Service) -> None:
    spawner = kube_spawner("carol", user_options={"profile": "pinned"},
                           config=configured(service.url),
                           tolerations=[{"key": "existing", "operator": "Exists"}])
    await pre_spawn_hook(spawner)
    env = spawner.environment
    assert env["RAY_ADDRESS"] == "ray://ray-carol-head-svc.team-a.svc:10001"  # KubeSpawner's ns
    assert env["TEST_PROFILE_ENV"] == "pinned-value"
    assert env["TEST_SECRET_ENV"] == {
        "name": "TEST_SECRET_ENV",
        "valueFrom": {"secretKeyRef": {"name": "test-secret", "key": "password"}},
    }
    assert spawner.cpu_guarantee == 0.25 and spawner.cpu_limit == 2.0
    assert spawner.mem_guarantee == 512 * 2**20 and spawner.mem_limit == 3 * 2**30
    assert spawner.tolerations == [
        {"key": "existing", "operator": "Exists"},
        {"key": "dedicated", "operator": "Equal", "value": "ray", "effect": "NoSchedule"},
    ]
    assert spawner.node_affinity_required == [
        {"matchExpressions": [{"key": "node-role.kubernetes.io/ray", "operator": "Exists"}]}
    ]
    assert spawner.extra_labels["jupyterhub.opendatahub.io/ray-cluster"] == "ray-carol"

    # and KubeSpawner really renders them into the notebook pod
    pod = await spawner.get_pod_manifest()
    container = pod.spec.containers[0]
    by_name = {e.name: e for e in container.env}
    assert by_name["RAY_CLUSTER"].value == "ray-carol"
    value_from = by_name["TEST_SECRET_ENV"].value_from
    secret = value_from["secretKeyRef"] if isinstance(value_from, dict) else value_from.secret_key_ref
    assert (secret["name"] if isinstance(secret, dict) else secret.name) == "test-secret"
    assert str(container.resources.limits["memory"]) == str(3 * 2**30)
    assert any(t.key == "dedicated" for t in pod.spec.tolerations)
    assert pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert pod.metadata.labels["jupyterhub.opendatahub.io/ray-cluster"] == "ray-carol"
    # JSP's pod label, volume and mount, the user name and the user's own env
    assert pod.metadata.labels["jupyterhub.opendatahub.io/user"] == "carol"
    assert by_name["JUPYTERHUB_USER_NAME"].value == "carol"
    assert str(by_name["MEM_LIMIT"].value) == str(3 * 2**30)
    # carol's settings ConfigMap is in the service's namespace, her notebook in team-a: the
    # service hands over the value itself (a reference would not resolve there).
    assert by_name["CAROLS_BUCKET"].value == "carol-bucket"
    volume = next(v for v in pod.spec.volumes if v.name == "team-data")
    assert volume.persistent_volume_claim == {"claimName": "team-data"}  # as KubeSpawner keeps it
    mounts = {m.name: m for m in container.volume_mounts}
    assert mounts["team-data"].mount_path == "/opt/app-root/src/data"


def named(server: str) -> Any:
    """What KubeSpawner reads of JupyterHub's orm.Spawner for a (named) server."""
    from types import SimpleNamespace
    return SimpleNamespace(name=server, display_name=server, server=None, state=None)


@pytest.mark.parametrize("user, server", [("alice", ""), ("Eje@RedHat.com", "exp-1")])
async def test_ray_token_by_reference_and_policy_labels_match_the_kubespawner_pod(
        service: Service, user: str, server: str) -> None:
    spawner = kube_spawner(user, user_options={"profile": "ray"}, config=configured(service.url),
                           orm_spawner=named(server))
    answer = await SingleuserProfiles(parent=spawner).pre_spawn_hook(spawner)
    cluster = answer["cluster"]
    ray_cluster = next(o for o in answer["objects"] if o["kind"] == "RayCluster")
    assert ray_cluster["spec"]["authOptions"] == {"mode": "token"}
    # KubeRay's Secret name (utils.CheckName): the last 50 characters of the cluster's name,
    # a leading digit or punctuation turned into `r`.
    secret = cluster[-50:]
    if not secret[0].isalpha():
        secret = "r" + secret[1:]
    assert spawner.environment["RAY_AUTH_MODE"] == "token"
    assert spawner.environment["RAY_AUTH_TOKEN"] == {
        "name": "RAY_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": secret, "key": "auth_token"}},
    }

    pod = await spawner.get_pod_manifest()
    by_name = {e.name: e for e in pod.spec.containers[0].env}
    assert by_name["RAY_AUTH_MODE"].value == "token"
    token = by_name["RAY_AUTH_TOKEN"]
    assert token.value is None  # no token value anywhere: the kubelet resolves the reference
    ref = token.value_from["secretKeyRef"] if isinstance(token.value_from, dict) \
        else token.value_from.secret_key_ref
    assert (ref["name"] if isinstance(ref, dict) else ref.name) == secret

    # The cluster's NetworkPolicy admits exactly this pod: KubeSpawner's own labels on it.
    policy = next(o for o in answer["objects"]
                  if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == cluster)
    notebook = policy["spec"]["ingress"][0]["from"][1]["podSelector"]["matchLabels"]
    assert notebook.items() <= pod.metadata.labels.items(), (notebook, pod.metadata.labels)
    assert notebook["hub.jupyter.org/servername"] == pod.metadata.labels["hub.jupyter.org/servername"]
    other = kube_spawner("bob", user_options={"profile": "ray"}, config=configured(service.url),
                         orm_spawner=named(server))
    other_pod = await other.get_pod_manifest()
    assert not notebook.items() <= other_pod.metadata.labels.items()


async def test_answer_env_from_and_mounts_reach_the_kubespawner_pod() -> None:
    spawner = kube_spawner("erin", user_options={}, config=Config())
    ref = {"secretRef": {"name": "jupyterhub-singleuser-profile-erin-envs", "optional": True}}
    answer = {"environment": {"A": "1"}, "pod": {
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}],
        "volume_mounts": [{"name": "d", "mountPath": "/opt/app-root/src/d"}],
        "env_from": [ref]}}
    apply_answer(spawner, answer, spawner.log)
    apply_answer(spawner, answer, spawner.log)  # idempotent: a retried hook adds nothing twice
    pod = await spawner.get_pod_manifest()
    container = pod.spec.containers[0]
    env_from = container.env_from
    assert len(env_from) == 1
    secret_ref = env_from[0]["secretRef"] if isinstance(env_from[0], dict) else env_from[0].secret_ref
    assert (secret_ref["name"] if isinstance(secret_ref, dict) else secret_ref.name) == ref["secretRef"]["name"]
    assert [m.mount_path for m in container.volume_mounts if m.name == "d"] == ["/opt/app-root/src/d"]


async def test_local_spawner_skips_value_from_env(service: Service,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    spawner = local_spawner("dave", user_options={"profile": "pinned"},
                            config=configured(service.url))
    await pre_spawn_hook(spawner)
    assert spawner.environment["TEST_PROFILE_ENV"] == "pinned-value"
    assert "TEST_SECRET_ENV" not in spawner.environment


# ---- failures the user sees ------------------------------------------------------------------


async def test_option_out_of_bounds_is_shown_to_the_user(settings_env: Service) -> None:
    spawner = local_spawner("alice", user_options={"profile": "ray", "options": {"workers": 9}})
    with pytest.raises(SpawnRefused) as refused:
        await pre_spawn_hook(spawner)
    err = refused.value
    assert err.status_code in (400, 422)
    assert err.code == "invalid_option"
    assert "options.workers must be between 0 and 4, got 9" in err.jupyterhub_message
    assert "Change your choice" in str(err)
    assert "Traceback" not in str(err) and "RAY_ADDRESS" not in spawner.environment


async def test_unknown_profile_is_shown_to_the_user(settings_env: Service) -> None:
    spawner = local_spawner("alice", user_options={"profile": "no-such-profile"})
    with pytest.raises(SpawnRefused) as refused:
        await pre_spawn_hook(spawner)
    assert 400 <= refused.value.status_code < 500
    assert "no-such-profile" in str(refused.value)


async def test_wrong_token_tells_to_contact_the_admin(service: Service) -> None:
    c = configured(service.url, token="wrong")
    spawner = local_spawner("alice", config=c)
    with pytest.raises(SpawnRefused) as refused:
        await pre_spawn_hook(spawner)
    assert "contact your administrator" in str(refused.value).lower()
    assert "missing or invalid token" in str(refused.value)


async def test_service_down_fails_fast_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spawner = local_spawner("alice", config=configured(url, retries=2))
    started = time.monotonic()
    with pytest.raises(SpawnRefused) as refused:
        await pre_spawn_hook(spawner)
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert refused.value.status_code == 503
    assert f"the Ray cluster service at {url} cannot be reached" in message
    assert "Try again in a minute" in message


async def test_retries_on_503_then_succeeds(proxy: FaultProxy) -> None:
    proxy.fail = 2
    spawner = local_spawner("erin", config=configured(proxy.url, retries=3))
    await pre_spawn_hook(spawner)
    assert proxy.seen == 3
    assert spawner.environment["RAY_CLUSTER"] == "ray-erin"


async def test_gives_up_after_the_retries(proxy: FaultProxy) -> None:
    proxy.fail = 10
    spawner = local_spawner("erin", config=configured(proxy.url, retries=2))
    with pytest.raises(SpawnRefused) as refused:
        await pre_spawn_hook(spawner)
    assert proxy.seen == 3
    assert "warming up" in str(refused.value)


# ---- progress --------------------------------------------------------------------------------


async def test_progress_while_waiting(proxy: FaultProxy) -> None:
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    class Spawner(ProfilesProgressMixin, SimpleLocalProcessSpawner):
        pass

    proxy.delay = 1.0
    spawner = Spawner(user=User("frank"), config=configured(proxy.url, progress_interval=0.3))
    hook = asyncio.ensure_future(pre_spawn_hook(spawner))
    await asyncio.sleep(0.1)
    events = [event async for event in spawner.progress()]  # ends when the hook is done
    await hook
    messages = [e["message"] for e in events]
    assert messages[0] == "Requesting a Ray cluster (the default profile)"
    assert any(m.startswith("Waiting for your Ray cluster to be ready") for m in messages)
    ours = messages.index("Ray cluster ray-frank requested; it starts alongside your notebook"
                          " (dry run: nothing was created)")
    assert messages[ours + 1:] == ["Spawning server..."]  # then the spawner's own events
    assert all(0 < e["progress"] <= 100 for e in events)
    # a reader arriving late gets the whole story
    assert [e["message"] async for e in spawner.progress()] == messages


async def test_progress_says_the_notebook_waits_for_the_ray_token_secret(
        proxy: FaultProxy) -> None:
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    class Spawner(ProfilesProgressMixin, SimpleLocalProcessSpawner):
        pass

    # The service in dry run answers what a cluster spawn answers, minus the writes; mark the
    # answer as applied, as a cluster-mode service would send it.
    proxy.rewrite = lambda answer: {**answer, "dry_run": False}
    spawner = Spawner(user=User("frank"), config=configured(proxy.url))
    hook = asyncio.ensure_future(pre_spawn_hook(spawner))
    await asyncio.sleep(0.1)
    events = [event async for event in spawner.progress()]
    await hook
    messages = [e["message"] for e in events]
    done = messages.index("Ray cluster ray-frank requested; it starts alongside your notebook")
    assert messages[done + 1] == ("Waiting for the Ray token Secret ray-frank: KubeRay creates it "
                                  "with the cluster, and your notebook starts once it exists")
    assert not any("error" in m.lower() for m in messages)


# ---- post_stop_hook and profile_list ----------------------------------------------------------


async def test_post_stop_hook(settings_env: Service, caplog: pytest.LogCaptureFixture) -> None:
    spawner = local_spawner("alice")
    await post_stop_hook(spawner)  # dry run: nothing to stop, no error


async def test_post_stop_hook_never_raises_when_the_service_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spawner = local_spawner("alice", config=configured(url, retries=50, stop_timeout=1.0))
    started = time.monotonic()
    await post_stop_hook(spawner)
    assert time.monotonic() - started < 3


async def test_profile_list_for_kubespawner(settings_env: Service) -> None:
    spawner = kube_spawner("alice")
    entries = await profile_list(spawner)
    slugs = [e["slug"] for e in entries]
    assert "ray" in slugs and "pinned" in slugs
    ray = entries[slugs.index("ray")]
    assert ray["default"] is True
    assert set(ray["profile_options"]["size"]["choices"]) >= {"Small", "Medium", "Large"}
    # KubeSpawner accepts it as its profile_list and applies a choice
    spawner.profile_list = profile_list
    spawner.user_options = {"profile": "ray", "size": "Large"}
    await spawner.load_user_options()
    assert spawner.cpu_limit == 4 and spawner.mem_limit == 8 * 2**30


async def test_profile_list_is_empty_when_the_service_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spawner = kube_spawner("alice", config=configured(url, retries=0))
    assert await profile_list(spawner) == []


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    monkeypatch.setenv("SINGLEUSER_PROFILES_URL", "http://sup.example:8080")
    monkeypatch.setenv("SINGLEUSER_PROFILES_TOKEN_FILE", str(token))
    monkeypatch.setenv("SINGLEUSER_PROFILES_SPAWN_TIMEOUT", "120")
    monkeypatch.setenv("SINGLEUSER_PROFILES_RETRIES", "5")
    settings = SingleuserProfiles()
    client = settings.client()
    assert (client.url, client.token, client.spawn_timeout, client.retries) == (
        "http://sup.example:8080", "from-file", 120.0, 5)
    # jupyterhub_config.py wins over the environment
    c = Config()
    c.SingleuserProfiles.url = "http://from-config:8080"
    assert SingleuserProfiles(config=c).url == "http://from-config:8080"
