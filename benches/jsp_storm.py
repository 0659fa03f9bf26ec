"""JSP 0.7.0 as a peer in the spawn storm (`cargo bench --bench load -- storm`, BENCHMARKS.md).

Runs JSP's own spawn path, with its real kubernetes/openshift clients, against the API server
of KUBECONFIG, for N users at once, the way ODH's JupyterHub ran it: one process, one asyncio
event loop, every spawn a coroutine, JSP's blocking calls made on the loop itself, because
JupyterHub called the hooks synchronously (`await maybe_future(spawner.run_pre_spawn_hook())`
and KubeSpawner's `await maybe_future(self.modify_pod_hook(self, pod))` run a plain function on
the loop). Per spawn, the calls ODH's `jupyterhub_config.py` made (tests/jsp/oracle.py, steps
2, 3 and 5):

1. `options_from_form`: `user.get(username)` (the size and GPU count of the spawn page);
2. `pre_spawn_hook`: `load_profiles(username=)`, `setup_services(spawner, image, username)`;
3. `modify_pod_hook`: `load_profiles(username=)`, `get_merged_profile`, `get_gpu_types`,
   `apply_pod_profile` on a KubeSpawner-like pod.

Between the steps the coroutine yields once (JupyterHub and KubeSpawner await in between), so
spawns interleave there and nowhere else. Each spawner's `SingleuserProfiles` (JSP's clients
and the DynamicClient's discovery) is built before the storm, as ODH's `OpenShiftSpawner` did
in its constructor when the spawn page was shown, and one warm-up spawn runs first (the load
tool does discovery and a warm-up spawn before timing the service and the baseline too).

Protocol with the load tool: reads nothing until it has prepared, then prints `ready` and waits
for a line on stdin; then runs the storm and prints one JSON object: latencies (s), wall (s),
errors, first_error, unstarted (spawns not begun within --max-seconds), cpu_seconds (this
process, storm only), rss_before_kib, hwm_kib.

    python benches/jsp_storm.py --namespace NS --users N [--image IMG] [--prefix user] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
import warnings
from types import SimpleNamespace

MOUNT_PATH = "/opt/app-root/src"  # ODH's jupyterhub_config.py


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def new_spawner(namespace: str, username: str, image: str):
    from jupyterhub_singleuser_profiles.profiles import SingleuserProfiles

    profiles = SingleuserProfiles(namespace=namespace, verify_ssl=False)
    return SimpleNamespace(
        user=SimpleNamespace(name=username), image=image, environment={}, single_user_services=[],
        single_user_profiles=profiles, gpu_mode=profiles.gpu_mode, gpu_count=0, deployment_size=None,
    )


def options_from_form(spawner) -> None:
    cm_data = spawner.single_user_profiles.user.get(spawner.user.name)
    spawner.deployment_size = cm_data["last_selected_size"]
    spawner.gpu_count = cm_data["gpu"]


def pre_spawn_hook(spawner) -> None:
    profiles = spawner.single_user_profiles
    profiles.load_profiles(username=spawner.user.name)
    profiles.setup_services(spawner, spawner.image, spawner.user.name)


def modify_pod_hook(spawner, pod):
    from jupyterhub_singleuser_profiles.profiles import SingleuserProfiles

    profiles = spawner.single_user_profiles
    profiles.load_profiles(username=spawner.user.name)
    profile = profiles.get_merged_profile(spawner.image, user=spawner.user.name, size=spawner.deployment_size)
    gpu_types = profiles.get_gpu_types()
    return SingleuserProfiles.apply_pod_profile(spawner.user.name, pod, profile, gpu_types, MOUNT_PATH,
                                                spawner.gpu_mode)


def pod_of(spawner):
    from kubernetes import client

    container = client.V1Container(
        name="notebook", image=spawner.image,
        env=[client.V1EnvVar(name=k, value=v) for k, v in spawner.environment.items()],
        resources=client.V1ResourceRequirements(limits={}, requests={}), volume_mounts=[],
    )
    return client.V1Pod(metadata=client.V1ObjectMeta(labels={}), spec=client.V1PodSpec(containers=[container], volumes=[]))


async def spawn(spawner) -> None:
    """One spawn as JupyterHub's `User.spawn` and KubeSpawner's `start` drive the hooks."""
    options_from_form(spawner)
    await asyncio.sleep(0)
    pre_spawn_hook(spawner)
    await asyncio.sleep(0)
    pod = modify_pod_hook(spawner, pod_of(spawner))
    if "RAY_DASHBOARD_HOST" not in spawner.environment:
        raise RuntimeError(f"no RAY_DASHBOARD_HOST in the environment: {spawner.environment}")
    assert pod.spec.containers[0].resources is not None


async def storm(spawners, max_seconds: float) -> dict:
    started = time.perf_counter()
    latencies: list[float] = []
    errors: list[str] = []
    unstarted = 0

    async def one(spawner):
        nonlocal unstarted
        # The hooks block the loop, so nothing can interrupt one: the bound is checked before
        # each spawn starts, and those left unstarted count as slower than the bound.
        if time.perf_counter() - started > max_seconds:
            unstarted += 1
            return
        try:
            await spawn(spawner)
            latencies.append(time.perf_counter() - started)
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"{spawner.user.name}: {type(e).__name__}: {str(e)[:300]}")

    await asyncio.gather(*(one(s) for s in spawners))
    return {"latencies": sorted(latencies), "wall": time.perf_counter() - started, "errors": len(errors),
            "first_error": errors[0] if errors else None, "unstarted": unstarted}


def main() -> int:
    warnings.simplefilter("ignore")
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # the KUBECONFIG's API server, never in-cluster
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--prefix", default="user")
    parser.add_argument("--image", default="ray-notebook:storm")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()

    built = time.perf_counter()
    warm = new_spawner(args.namespace, "warmup", args.image)
    spawners = [new_spawner(args.namespace, f"{args.prefix}{i}", args.image) for i in range(args.users)]
    build_s = time.perf_counter() - built
    try:
        t = time.perf_counter()
        asyncio.run(spawn(warm))
        warm_s = time.perf_counter() - t
    except Exception:  # noqa: BLE001
        print(json.dumps({"error": "warm-up spawn failed: " + traceback.format_exc()[-1500:]}), flush=True)
        return 1
    print("ready", flush=True)
    sys.stdin.readline()
    rss_before = status_kib("VmRSS:")
    cpu = time.process_time()
    result = asyncio.run(storm(spawners, args.max_seconds))
    result.update(cpu_seconds=time.process_time() - cpu, rss_before_kib=rss_before, hwm_kib=status_kib("VmHWM:"),
                  rss_after_kib=status_kib("VmRSS:"), build_seconds=build_s, warmup_seconds=warm_s)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
