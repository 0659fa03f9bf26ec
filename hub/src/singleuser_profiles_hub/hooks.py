"""JupyterHub hooks: every notebook gets its own Ray cluster from the singleuser-profiles service.

In `jupyterhub_config.py`::

    from singleuser_profiles_hub import pre_spawn_hook, post_stop_hook, profile_list

    c.Spawner.pre_spawn_hook = pre_spawn_hook
    c.Spawner.post_stop_hook = post_stop_hook
    c.KubeSpawner.profile_list = profile_list          # KubeSpawner only
    c.SingleuserProfiles.url = "http://singleuser-profiles.opendatahub.svc:8080"
    c.SingleuserProfiles.token_file = "/var/run/secrets/hub/token"
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Mapping, Optional

from tornado import web
from traitlets import Bool, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from .client import ProfilesClient, ServiceError, ServiceUnavailable

__all__ = [
    "SingleuserProfiles",
    "SpawnRefused",
    "ProfilesProgressMixin",
    "pre_spawn_hook",
    "post_stop_hook",
    "profile_list",
    "spawn_request",
]

ENV_PREFIX = "SINGLEUSER_PROFILES_"
PROGRESS_ATTR = "_singleuser_profiles_progress"
# KubeSpawner's "no size" choice in the profile_list this package serves (JSP's spawn page
# calls the same choice "Default").
NO_SIZE = "default"


class SpawnRefused(web.HTTPError):
    """A spawn the Ray cluster service refused or could not serve.

    JupyterHub shows `jupyterhub_message` on the spawn page and in the REST API's error and
    progress events; `str()` gives the same text, never a trace.
    """

    def __init__(self, status: int, message: str, *, code: str = "error") -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.jupyterhub_message = message
        self.code = code

    def __str__(self) -> str:
        return self.jupyterhub_message


class _Progress:
    """Spawn progress events from the hook, replayed to every reader of the progress stream."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = False
        self._changed = asyncio.Event()

    def emit(self, progress: int, message: str) -> None:
        self.events.append({"progress": progress, "message": message})
        self._changed.set()

    def finish(self) -> None:
        self.done = True
        self._changed.set()

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        while True:
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.done:
                return
            self._changed.clear()
            await self._changed.wait()


class ProfilesProgressMixin:
    """Mix into a Spawner class to show the hook's progress on JupyterHub's spawn page.

        class Spawner(ProfilesProgressMixin, KubeSpawner): ...
        c.JupyterHub.spawner_class = Spawner

    The hook's events (e.g. "Waiting for your Ray cluster to be ready (20 s)") come first,
    then the spawner's own.
    """

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        reporter: Optional[_Progress] = getattr(self, PROGRESS_ATTR, None)
        if reporter is not None:
            async for event in reporter.stream():
                yield event
        parent: Any = super()
        if hasattr(parent, "progress"):
            async for event in parent.progress():
                yield event


def _env(name: str, fallback: str = "") -> str:
    return os.environ.get(ENV_PREFIX + name, fallback)


class SingleuserProfiles(LoggingConfigurable):
    """Configuration of the hooks (`c.SingleuserProfiles.*`, or `SINGLEUSER_PROFILES_*` env)."""

    url = Unicode(
        help="Base URL of the singleuser-profiles service (env SINGLEUSER_PROFILES_URL)."
    ).tag(config=True)

    @default("url")
    def _url_default(self) -> str:
        return _env("URL", "http://singleuser-profiles:8080")

    token = Unicode(
        help="API token the service accepts, sent as `Authorization: token ...` "
        "(env SINGLEUSER_PROFILES_TOKEN). Read from `token_file` when empty."
    ).tag(config=True)

    @default("token")
    def _token_default(self) -> str:
        return _env("TOKEN")

    token_file = Unicode(
        help="File holding the token, e.g. a mounted Secret (env SINGLEUSER_PROFILES_TOKEN_FILE)."
    ).tag(config=True)

    @default("token_file")
    def _token_file_default(self) -> str:
        return _env("TOKEN_FILE")

    namespace = Unicode(
        help="Namespace for the Ray clusters. Empty: the spawner's `namespace` (KubeSpawner), "
        "else the service's own namespace (env SINGLEUSER_PROFILES_NAMESPACE)."
    ).tag(config=True)

    @default("namespace")
    def _namespace_default(self) -> str:
        return _env("NAMESPACE")

    request_timeout = Float(
        help="Seconds to wait for an ordinary API answer (env SINGLEUSER_PROFILES_TIMEOUT)."
    ).tag(config=True)

    @default("request_timeout")
    def _request_timeout_default(self) -> float:
        return float(_env("TIMEOUT", "30"))

    spawn_timeout = Float(
        help="Seconds to wait for the spawn answer; profiles with `wait` answer only once the "
        "cluster is ready (env SINGLEUSER_PROFILES_SPAWN_TIMEOUT). Keep it above the service's "
        "--spawn-timeout and below the spawner's start_timeout."
    ).tag(config=True)

    @default("spawn_timeout")
    def _spawn_timeout_default(self) -> float:
        return float(_env("SPAWN_TIMEOUT", "660"))

    stop_timeout = Float(
        help="At most this many seconds for the stop call, retries included; the notebook's "
        "stop never waits longer (env SINGLEUSER_PROFILES_STOP_TIMEOUT)."
    ).tag(config=True)

    @default("stop_timeout")
    def _stop_timeout_default(self) -> float:
        return float(_env("STOP_TIMEOUT", "20"))

    retries = Integer(
        help="Retries when the service is unreachable or answers 502/503/504 "
        "(env SINGLEUSER_PROFILES_RETRIES)."
    ).tag(config=True)

    @default("retries")
    def _retries_default(self) -> int:
        return int(_env("RETRIES", "3"))

    retry_backoff = Float(
        help="First retry delay in seconds; doubles each retry, at most 10 s "
        "(env SINGLEUSER_PROFILES_RETRY_BACKOFF)."
    ).tag(config=True)

    @default("retry_backoff")
    def _retry_backoff_default(self) -> float:
        return float(_env("RETRY_BACKOFF", "0.5"))

    progress_interval = Float(
        5.0, help="Seconds between progress messages while the cluster is being prepared."
    ).tag(config=True)

    apply_pod_settings = Bool(
        True,
        help="Apply the answer's pod settings (resources; on KubeSpawner also tolerations, "
        "affinity, labels, volumes, GPUs) to the spawner.",
    ).tag(config=True)

    profile_list_by_image = Bool(
        False,
        help="profile_list: offer only the profiles that match the spawner's current image "
        "(default: every profile the user may pick; a profile can pin its own image).",
    ).tag(config=True)

    # ---- plumbing -------------------------------------------------------------------------

    def client(self, *, retries: Optional[int] = None) -> ProfilesClient:
        token = self.token
        if not token and self.token_file:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        return ProfilesClient(
            url=self.url,
            token=token,
            timeout=self.request_timeout,
            spawn_timeout=self.spawn_timeout,
            retries=self.retries if retries is None else retries,
            backoff=self.retry_backoff,
            logger=self.log,
        )

    def namespace_for(self, spawner: Any) -> str:
        return self.namespace or str(getattr(spawner, "namespace", "") or "")

    # ---- hooks ----------------------------------------------------------------------------

    async def pre_spawn_hook(self, spawner: Any) -> dict[str, Any]:
        """Creates the user's Ray cluster and wires the notebook to it; returns the answer."""
        body = spawn_request(spawner, namespace=self.namespace_for(spawner))
        launcher_image = _launcher_choice(spawner, "last_selected_image")
        if launcher_image and _has(spawner, "image"):
            # JSP's spawn page picked the notebook's image too, as ODH's hub applied it.
            spawner.image = launcher_image
        reporter = _Progress()
        setattr(spawner, PROGRESS_ATTR, reporter)
        who = _log_name(spawner)
        try:
            try:
                client = self.client()
            except OSError as err:
                raise ServiceError(
                    f"the token file {self.token_file} cannot be read ({err.strerror})",
                    status=500,
                    code="token_file",
                ) from None
            profile = body.get("profile") or "the default profile"
            first = f"Requesting a Ray cluster ({profile})"
            reporter.emit(10, first)
            self.log.info("singleuser-profiles: %s: %s", who, first)
            answer = await self._spawn_with_progress(client, body, reporter, who)
            apply_answer(spawner, answer, self.log, pod_settings=self.apply_pod_settings)
            cluster = answer.get("cluster", "")
            waited = (answer.get("profile") or {}).get("wait_seconds") is not None
            done = (
                f"Ray cluster {cluster} is ready"
                if waited
                else f"Ray cluster {cluster} requested; it starts alongside your notebook"
            )
            if answer.get("dry_run"):
                done += " (dry run: nothing was created)"
            reporter.emit(40, done)
            self.log.info("singleuser-profiles: %s: %s", who, done)
            secret = token_secret(answer)
            if secret and not waited and not answer.get("dry_run"):
                # The notebook's RAY_AUTH_TOKEN refers to KubeRay's Secret; until KubeRay has
                # made it, the kubelet holds the container (CreateContainerConfigError) and
                # retries. Normal, and short: say so before KubeSpawner shows that event.
                waiting = (f"Waiting for the Ray token Secret {secret}: KubeRay creates it with "
                           "the cluster, and your notebook starts once it exists")
                reporter.emit(45, waiting)
                self.log.info("singleuser-profiles: %s: %s", who, waiting)
        except ServiceError as err:
            refused = _refusal(err)
            self.log.error(
                "singleuser-profiles: spawn for %s refused: [%s] %s", who, err.code, err.message
            )
            reporter.emit(100, str(refused))
            raise refused from None
        finally:
            reporter.finish()
        return answer

    async def _spawn_with_progress(
        self, client: ProfilesClient, body: Mapping[str, Any], reporter: _Progress, who: str
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(client.spawn(body))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.progress_interval)
                if done:
                    return task.result()
                waited = loop.time() - started
                message = f"Waiting for your Ray cluster to be ready ({waited:.0f} s)"
                state = await self._cluster_state(client, body)
                if state:
                    message += f": {state}"
                reporter.emit(min(35, 10 + int(waited / 10)), message)
                self.log.info("singleuser-profiles: %s: %s", who, message)
        finally:
            if not task.done():
                task.cancel()

    async def _cluster_state(self, client: ProfilesClient, body: Mapping[str, Any]) -> str:
        """What the service reports of the cluster being prepared, e.g. `ray-alice, head pod
        ray-alice-head-x8k2p, state: ready`; empty when unknown. Never fails."""
        status = ProfilesClient(url=client.url, token=client.token, retries=0,
                                timeout=max(0.5, min(self.progress_interval, 5.0)),
                                logger=client.logger)
        try:
            answer = await status.clusters(str(body["user"]), str(body.get("namespace") or ""))
        except (ServiceError, OSError):
            return ""
        for cluster in answer.get("clusters") or []:
            if isinstance(cluster, dict) and cluster.get("server", "") == body.get("server", ""):
                parts = [str(cluster.get("name", ""))]
                if cluster.get("head_pod"):
                    parts.append(f"head pod {cluster['head_pod']}")
                parts.append(f"state: {cluster.get('state') or 'pending'}")
                return ", ".join(parts)
        return ""

    async def post_stop_hook(self, spawner: Any) -> None:
        """Deletes the Ray cluster of that server. Never raises: the stop goes on regardless."""
        who = _log_name(spawner)
        try:
            client = self.client(retries=self.retries)
            answer = await asyncio.wait_for(
                client.stop(spawner.user.name, spawner.name or "", self.namespace_for(spawner)),
                timeout=self.stop_timeout,
            )
        except asyncio.TimeoutError:
            self.log.warning(
                "singleuser-profiles: stopping the Ray cluster of %s took more than %.0f s; "
                "gave up (delete its owner ConfigMap singleuser-service-ref-* to clean up)",
                who, self.stop_timeout,
            )
        except Exception as err:  # never block the stop
            self.log.warning(
                "singleuser-profiles: could not stop the Ray cluster of %s: %s", who, err
            )
        else:
            self.log.info(
                "singleuser-profiles: %s: %s (owner %s)",
                who,
                "Ray cluster deleted" if answer.get("stopped") else "no Ray cluster to delete",
                answer.get("owner"),
            )

    async def profile_list(self, spawner: Any) -> list[dict[str, Any]]:
        """KubeSpawner `profile_list` entries for this user; `[]` when the service fails."""
        image = str(getattr(spawner, "image", "") or "") if self.profile_list_by_image else ""
        try:
            entries = await self.client().profiles(
                spawner.user.name, _groups(spawner), image, kubespawner=True
            )
        except (ServiceError, OSError) as err:
            self.log.error(
                "singleuser-profiles: cannot list profiles for %s: %s", _log_name(spawner), err
            )
            return []
        return list(entries) if isinstance(entries, list) else []


# ---- the functions jupyterhub_config.py assigns ------------------------------------------


def _settings(spawner: Any) -> SingleuserProfiles:
    # parent=spawner: reads c.SingleuserProfiles.* from the hub's config and logs to its log.
    if hasattr(spawner, "config"):
        return SingleuserProfiles(parent=spawner)
    return SingleuserProfiles()


async def pre_spawn_hook(spawner: Any) -> None:
    """`c.Spawner.pre_spawn_hook`: create the Ray cluster, inject its environment."""
    await _settings(spawner).pre_spawn_hook(spawner)


async def post_stop_hook(spawner: Any) -> None:
    """`c.Spawner.post_stop_hook`: delete the Ray cluster; never blocks the stop."""
    await _settings(spawner).post_stop_hook(spawner)


async def profile_list(spawner: Any) -> list[dict[str, Any]]:
    """`c.KubeSpawner.profile_list`: the profiles this user may pick."""
    return await _settings(spawner).profile_list(spawner)


# ---- request and answer ------------------------------------------------------------------


def _log_name(spawner: Any) -> str:
    name = getattr(spawner, "_log_name", None)
    if isinstance(name, str):
        return name
    user = getattr(getattr(spawner, "user", None), "name", "?")
    return f"{user}:{spawner.name}" if getattr(spawner, "name", "") else str(user)


def _groups(spawner: Any) -> list[str]:
    groups = getattr(spawner.user, "groups", None) or []
    return sorted({g if isinstance(g, str) else g.name for g in groups})


def _launcher_choice(spawner: Any, key: str) -> str:
    """What JSP's spawn page chose: it starts the server with the user's saved settings as the
    body (`last_selected_image`, `last_selected_size`, `gpu`, `env`), which become user_options.
    The env needs nothing here: the service refers the notebook to the user's env ConfigMap."""
    value = (getattr(spawner, "user_options", None) or {}).get(key)
    return value if isinstance(value, str) else ""


def _image(spawner: Any, options: Mapping[str, Any]) -> str:
    # The user's explicit choice first (KubeSpawner applies it to `image` only later, in
    # start()), then the spawner's image (KubeSpawner), then JUPYTER_IMAGE_SPEC.
    chosen = options.get("image") or _launcher_choice(spawner, "last_selected_image")
    if isinstance(chosen, str) and chosen:
        return chosen
    image = getattr(spawner, "image", None)
    if isinstance(image, str) and image:
        return image
    spec = (getattr(spawner, "environment", None) or {}).get("JUPYTER_IMAGE_SPEC")
    if isinstance(spec, str) and spec:
        return spec
    return os.environ.get("JUPYTER_IMAGE_SPEC", "")


def spawn_request(spawner: Any, namespace: str = "") -> dict[str, Any]:
    """The `POST /api/v1/spawn` body for this spawner.

    From `user_options`: `profile` (a profile slug, as KubeSpawner's profile_list sends it),
    `size` (KubeSpawner's `default` choice means the profile's own resources), `options`
    (a map of the profile's typed options, e.g. `{"workers": 3}`) and `image`; or what JSP's
    spawn page sends, `last_selected_image` and `last_selected_size`.
    """
    options = dict(getattr(spawner, "user_options", None) or {})
    body: dict[str, Any] = {
        "user": spawner.user.name,
        "groups": _groups(spawner),
        "server": spawner.name or "",
    }
    image = _image(spawner, options)
    if image:
        body["image"] = image
    profile = options.get("profile")
    if isinstance(profile, str) and profile:
        body["profile"] = profile
    size = options.get("size") or _launcher_choice(spawner, "last_selected_size")
    if isinstance(size, str) and size and size.lower() != NO_SIZE:
        body["size"] = size
    chosen = options.get("options")
    if isinstance(chosen, Mapping) and chosen:
        body["options"] = dict(chosen)
    if namespace:
        body["namespace"] = namespace
    return body


def _refusal(err: ServiceError) -> SpawnRefused:
    """What the user reads on the spawn page: what went wrong, and what to do."""
    what = err.message.rstrip(".")
    if isinstance(err, ServiceUnavailable) or err.status is None or err.status >= 500:
        return SpawnRefused(
            503,
            f"Your Ray cluster could not be created: {what}. Try again in a minute; if it keeps "
            "failing, contact your administrator.",
            code=err.code,
        )
    if err.status == 401:
        return SpawnRefused(
            500,
            f"The notebook launcher is not allowed to create Ray clusters ({what}). "
            "Contact your administrator: the hub's token for the Ray cluster service is wrong.",
            code=err.code,
        )
    if err.status == 403:
        return SpawnRefused(
            403,
            f"Your notebook could not start: {what}. Pick another profile, or ask your "
            "administrator for access.",
            code=err.code,
        )
    if err.code in {"invalid_option", "unknown_option", "invalid_request", "unknown_profile",
                    "unknown_size", "conflicting_option"} or err.field:
        hint = "Change your choice on the spawn page and start again."
    else:
        hint = ("Start again; if it keeps failing, contact your administrator "
                "(the Ray cluster profiles need fixing).")
    return SpawnRefused(err.status, f"Your notebook could not start: {what}. {hint}",
                        code=err.code)


def token_secret(answer: Mapping[str, Any]) -> str:
    """The Secret the answer's RAY_AUTH_TOKEN refers to (KubeRay's), or "" without one."""
    value = (answer.get("environment") or {}).get("RAY_AUTH_TOKEN")
    if not isinstance(value, Mapping):
        return ""
    ref = (value.get("valueFrom") or {}).get("secretKeyRef") or {}
    return str(ref.get("name") or "") if isinstance(ref, Mapping) else ""


def _is_kubespawner(spawner: Any) -> bool:
    try:
        from kubespawner import KubeSpawner  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the installation
        return False
    return isinstance(spawner, KubeSpawner)


def _has(spawner: Any, name: str) -> bool:
    has_trait = getattr(spawner, "has_trait", None)
    return bool(has_trait(name)) if callable(has_trait) else hasattr(spawner, name)


def apply_answer(
    spawner: Any, answer: Mapping[str, Any], log: Any, *, pod_settings: bool = True
) -> None:
    """Merges the answer's environment into `spawner.environment` and applies pod settings."""
    kube = _is_kubespawner(spawner)
    environment = dict(getattr(spawner, "environment", None) or {})
    for name, value in (answer.get("environment") or {}).items():
        if isinstance(value, str):
            environment[name] = value
        elif kube and isinstance(value, Mapping):
            # KubeSpawner takes an EnvVar spec (valueFrom: secretKeyRef, ...) as a dict.
            environment[name] = {"name": name, **value}
        else:
            log.warning(
                "singleuser-profiles: %s is set from %s, which %s cannot inject; skipped",
                name, sorted(value) if isinstance(value, Mapping) else type(value).__name__,
                type(spawner).__name__,
            )
    spawner.environment = environment
    if pod_settings:
        _apply_pod(spawner, answer.get("pod") or {}, kube, log)


# The answer's `pod.kubespawner` traits, already in the Spawner's units: cores and bytes.
_RESOURCE_TRAITS: dict[str, type[float] | type[int]] = {"cpu_guarantee": float, "cpu_limit": float, "mem_guarantee": int,
                    "mem_limit": int}


def _apply_pod(spawner: Any, pod: Mapping[str, Any], kube: bool, log: Any) -> None:
    units: Mapping[str, Any] = pod.get("kubespawner") or {}
    for trait, unit in _RESOURCE_TRAITS.items():
        value = units.get(trait)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _has(spawner, trait):
            setattr(spawner, trait, unit(value))
    if not kube:
        return

    tolerations = list(pod.get("tolerations") or [])
    if tolerations:
        known = list(spawner.tolerations)
        spawner.tolerations = known + [t for t in tolerations if t not in known]

    affinity = pod.get("affinity") or {}
    node = affinity.get("nodeAffinity") or {}
    required = (node.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get(
        "nodeSelectorTerms"
    ) or []
    _extend(spawner, "node_affinity_required", required)
    _extend(spawner, "node_affinity_preferred",
            node.get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    for kind, prefix in (("podAffinity", "pod_affinity"), ("podAntiAffinity", "pod_anti_affinity")):
        spec = affinity.get(kind) or {}
        _extend(spawner, f"{prefix}_required",
                spec.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        _extend(spawner, f"{prefix}_preferred",
                spec.get("preferredDuringSchedulingIgnoredDuringExecution") or [])

    labels = pod.get("labels") or {}
    if labels:
        spawner.extra_labels = {**spawner.extra_labels, **{k: str(v) for k, v in labels.items()}}

    gpu = pod.get("gpu") or 0
    if isinstance(gpu, int) and gpu > 0:
        spawner.extra_resource_limits = {**spawner.extra_resource_limits, "nvidia.com/gpu": str(gpu)}
        spawner.extra_resource_guarantees = {
            **spawner.extra_resource_guarantees, "nvidia.com/gpu": str(gpu)
        }

    # The service gives the pod volumes and the notebook's mounts as JSP made them.
    volumes = [v for v in pod.get("volumes") or [] if isinstance(v, Mapping) and "name" in v]
    mounts = [m for m in pod.get("volume_mounts") or [] if isinstance(m, Mapping) and "name" in m]
    _extend(spawner, "volumes", volumes)
    _extend(spawner, "volume_mounts", mounts)

    # The user's secret env (JSP's `-envs` Secret), by reference.
    env_from = [e for e in pod.get("env_from") or [] if isinstance(e, Mapping)]
    if env_from and _has(spawner, "extra_container_config"):
        config = dict(spawner.extra_container_config or {})
        known = list(config.get("envFrom") or [])
        config["envFrom"] = known + [e for e in env_from if e not in known]
        spawner.extra_container_config = config


def _extend(spawner: Any, trait: str, items: list[Any]) -> None:
    if items and _has(spawner, trait):
        known = list(getattr(spawner, trait))
        setattr(spawner, trait, known + [i for i in items if i not in known])
