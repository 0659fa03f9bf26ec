"""An in-process stand-in for the Kubernetes API server, at the kubernetes client's REST layer.

JSP 0.7.0 talks to the cluster through the `kubernetes` client (CoreV1Api) and the `openshift`
DynamicClient; both end in `kubernetes.client.rest.RESTClientObject.request`. Replacing that one
method keeps everything above it real: the client's (de)serialisation, the DynamicClient's
discovery and error mapping, and all of JSP. Nothing goes over the network.

The fake serves what a real API server would for the calls JSP makes:
- discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`) for the built-in
  kinds below plus every `apiVersion`/`kind` a template of the scenario names;
- get, list (equality label selectors), create (409 when it exists), replace and delete of any
  namespaced or cluster-scoped object, with `uid`, `resourceVersion`, `creationTimestamp` and
  `namespace` set as the server sets them;
- map keys in sorted order, as the API server encodes them;
- OpenShift's Route admission default: a Route created without `spec.host` gets
  `<name>-<namespace>.<APPS_DOMAIN>` (what the router's admission does on a real cluster).

It records every write (method, path, body as sent) so the harness can say what JSP would have
created.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

APPS_DOMAIN = "apps.example.com"

# (group, version, kind, namespaced) served whatever the scenario holds.
BUILTIN_KINDS = [
    ("", "v1", "ConfigMap", True),
    ("", "v1", "Secret", True),
    ("", "v1", "Service", True),
    ("", "v1", "Pod", True),
    ("", "v1", "PersistentVolumeClaim", True),
    ("", "v1", "ServiceAccount", True),
    ("", "v1", "Endpoints", True),
    ("", "v1", "Node", False),
    ("", "v1", "Namespace", False),
    ("apps", "v1", "Deployment", True),
    ("apps", "v1", "StatefulSet", True),
    ("batch", "v1", "Job", True),
    ("networking.k8s.io", "v1", "Ingress", True),
    ("networking.k8s.io", "v1", "NetworkPolicy", True),
    ("rbac.authorization.k8s.io", "v1", "Role", True),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", True),
    ("route.openshift.io", "v1", "Route", True),
    ("image.openshift.io", "v1", "ImageStream", True),
    ("build.openshift.io", "v1", "Build", True),
    ("config.openshift.io", "v1", "ClusterVersion", False),
    ("ray.io", "v1", "RayCluster", True),
    ("ray.io", "v1alpha1", "RayCluster", True),
    ("cluster.ray.io", "v1", "RayCluster", True),
    ("radanalytics.io", "v1", "SparkCluster", True),
]

CLUSTER_SCOPED = {"Node", "Namespace", "ClusterVersion", "ClusterRole", "ClusterRoleBinding"}


def plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("s") or lower.endswith("x"):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


@dataclass
class Kind:
    group: str
    version: str
    kind: str
    namespaced: bool

    @property
    def plural(self) -> str:
        return plural(self.kind)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


class FakeResponse:
    """What urllib3 (and the kubernetes client's RESTResponse) hands back."""

    def __init__(self, status: int, body: Any, reason: str = ""):
        self.status = status
        self.reason = reason or {200: "OK", 201: "Created", 404: "Not Found", 409: "Conflict"}.get(status, "")
        self.data = json.dumps(body).encode("utf-8")
        self._headers = {"content-type": "application/json"}

    def getheaders(self):
        return dict(self._headers)

    def getheader(self, name, default=None):
        return self._headers.get(name.lower(), default)


@dataclass
class Write:
    method: str
    path: str
    body: Any


@dataclass
class FakeCluster:
    kinds: list[Kind] = field(default_factory=list)
    # (group_version, plural, namespace or "", name) -> object
    objects: dict[tuple[str, str, str, str], dict] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _rv: int = 1000

    def __post_init__(self):
        for group, version, kind, namespaced in BUILTIN_KINDS:
            self.add_kind(group, version, kind, namespaced)

    # --- setup --------------------------------------------------------------------------
    def add_kind(self, group: str, version: str, kind: str, namespaced: bool | None = None) -> None:
        if namespaced is None:
            namespaced = kind not in CLUSTER_SCOPED
        if not any(k.group == group and k.version == version and k.kind == kind for k in self.kinds):
            self.kinds.append(Kind(group, version, kind, namespaced))

    def add_kinds_named_in(self, text: str) -> None:
        """Registers the top-level apiVersion/kind a template names (it may not parse as YAML yet)."""
        api = re.search(r"^apiVersion:\s*['\"]?([^\s'\"#]+)", text, re.M)
        kind = re.search(r"^kind:\s*['\"]?([^\s'\"#]+)", text, re.M)
        if api and kind:
            group, _, version = api.group(1).rpartition("/")
            self.add_kind(group, version, kind.group(1))

    def put(self, obj: dict, namespace: str) -> None:
        """Stores an object as if an admin had applied it."""
        kind = self._kind_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        if kind is None:
            group, _, version = obj.get("apiVersion", "").rpartition("/")
            self.add_kind(group, version, obj["kind"])
            kind = self._kind_for(obj["apiVersion"], obj["kind"])
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        ns = namespace if kind.namespaced else ""
        if kind.namespaced:
            meta["namespace"] = namespace
        self._server_fields(meta)
        self.objects[(kind.group_version, kind.plural, ns, meta["name"])] = stored

    # --- the REST layer -----------------------------------------------------------------
    def request(self, method, url, query_params=None, headers=None, body=None, post_params=None,
                _preload_content=True, _request_timeout=None):
        from kubernetes.client.rest import ApiException, RESTResponse

        parts = urlsplit(url)
        query = dict(query_params or [])
        query.update(dict(parse_qsl(parts.query)))
        method = method.upper()
        self.requests.append((method, parts.path))
        status, payload = self._serve(method, parts.path, query, body)
        response = FakeResponse(status, sorted_maps(payload))
        if _preload_content:
            response = RESTResponse(response)
        if not 200 <= status <= 299:
            raise ApiException(http_resp=response)
        return response

    def _serve(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        path = path.rstrip("/") or "/"
        if method == "GET":
            discovery = self._discovery(path)
            if discovery is not None:
                return discovery
        route = self._route(path)
        if route is None:
            return self._status(404, f"the server could not find the requested resource ({path})")
        kind, namespace, name = route
        key = (kind.group_version, kind.plural, namespace, name)
        if method == "GET" and name:
            if key in self.objects:
                return 200, self.objects[key]
            return self._not_found(kind, name)
        if method == "GET":
            items = [o for (gv, pl, ns, _), o in sorted(self.objects.items())
                     if gv == kind.group_version and pl == kind.plural and (not namespace or ns == namespace)
                     and self._selected(o, query.get("labelSelector"))]
            return 200, {"apiVersion": kind.group_version, "kind": kind.kind + "List",
                         "metadata": {"resourceVersion": str(self._rv)}, "items": items}
        if method == "POST" and not name:
            obj = copy.deepcopy(body) or {}
            name = (obj.get("metadata") or {}).get("name")
            self.writes.append(Write("POST", path, copy.deepcopy(body)))
            if not name:
                return self._status(422, f"{kind.kind} is invalid: metadata.name: Required value")
            key = (kind.group_version, kind.plural, namespace, name)
            if key in self.objects:
                return self._status(409, f'{kind.plural} "{name}" already exists', reason="AlreadyExists")
            meta = obj.setdefault("metadata", {})
            if kind.namespaced:
                meta["namespace"] = namespace
            self._server_fields(meta)
            self._admission(kind, obj, namespace)
            self.objects[key] = obj
            return 201, obj
        if method == "PUT" and name:
            self.writes.append(Write("PUT", path, copy.deepcopy(body)))
            if key not in self.objects:
                return self._not_found(kind, name)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            old = self.objects[key]["metadata"]
            meta["uid"] = old["uid"]
            meta["creationTimestamp"] = old["creationTimestamp"]
            if kind.namespaced:
                meta["namespace"] = namespace
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._admission(kind, obj, namespace)
            self.objects[key] = obj
            return 200, obj
        if method == "DELETE" and name:
            self.writes.append(Write("DELETE", path, None))
            if key not in self.objects:
                return self._not_found(kind, name)
            del self.objects[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return self._status(405, f"{method} {path} is not served by the fake")

    # --- helpers ------------------------------------------------------------------------
    def _kind_for(self, api_version: str, kind: str) -> Kind | None:
        group, _, version = api_version.rpartition("/")
        for k in self.kinds:
            if k.group == group and k.version == version and k.kind == kind:
                return k
        return None

    def _route(self, path: str):
        """`/api/v1[/namespaces/NS]/PLURAL[/NAME]` or `/apis/G/V[/namespaces/NS]/PLURAL[/NAME]`."""
        segments = path.strip("/").split("/")
        if segments[0] == "api" and len(segments) >= 3:
            group, version, rest = "", segments[1], segments[2:]
        elif segments[0] == "apis" and len(segments) >= 4:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return None
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            return None
        for k in self.kinds:
            if k.group == group and k.version == version and k.plural == rest[0]:
                return k, (namespace if k.namespaced else ""), (rest[1] if len(rest) == 2 else "")
        return None

    def _discovery(self, path: str):
        if path == "/version":
            return 200, {"major": "1", "minor": "20", "gitVersion": "v1.20.0", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for k in self.kinds:
                if k.group:
                    groups.setdefault(k.group, [])
                    if k.version not in groups[k.group]:
                        groups[k.group].append(k.version)
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in sorted(groups.items())]}
        segments = path.strip("/").split("/")
        if segments == ["api", "v1"]:
            group, version = "", "v1"
        elif len(segments) == 3 and segments[0] == "apis":
            group, version = segments[1], segments[2]
        else:
            return None
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources = [{"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                      "kind": k.kind, "verbs": verbs}
                     for k in self.kinds if k.group == group and k.version == version]
        if not resources:
            return self._status(404, f"no resources in {path}")
        gv = f"{group}/{version}" if group else version
        return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def _server_fields(self, meta: dict) -> None:
        self._rv += 1
        meta.setdefault("uid", str(uuid.UUID(int=self._rv)))
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("creationTimestamp", "2021-11-29T12:00:00Z")

    @staticmethod
    def _admission(kind: Kind, obj: dict, namespace: str) -> None:
        if kind.group == "" and kind.kind == "Secret" and obj.get("stringData"):
            # The API server stores stringData base64-encoded in data.
            data = obj.setdefault("data", {}) or {}
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        if kind.group == "route.openshift.io" and kind.kind == "Route":
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict) and not spec.get("host"):
                spec["host"] = f"{obj['metadata']['name']}-{namespace}.{APPS_DOMAIN}"

    @staticmethod
    def _selected(obj: dict, selector: str | None) -> bool:
        if not selector:
            return True
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in selector.split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip().lstrip("="):
                return False
        return True

    def _not_found(self, kind: Kind, name: str):
        return self._status(404, f'{kind.plural} "{name}" not found', reason="NotFound")

    @staticmethod
    def _status(code: int, message: str, reason: str = ""):
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                      "reason": reason, "code": code}


def sorted_maps(value):
    """The API server encodes maps (ConfigMap data, labels, every map of a custom resource) with
    sorted keys (Go's encoding/json), so JSP reads them in that order. (Struct fields of built-in
    kinds come in Go's field order there; only a `*` or whole-map return path could tell.)"""
    if isinstance(value, dict):
        return {k: sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_maps(v) for v in value]
    return value


def install(cluster: FakeCluster) -> None:
    """Routes every request of the kubernetes client (and so of the DynamicClient) to `cluster`."""
    from kubernetes.client import rest

    def request(_self, *args, **kwargs):
        return cluster.request(*args, **kwargs)

    rest.RESTClientObject.request = request
