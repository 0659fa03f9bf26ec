"""The differential test: every corpus scenario through JSP 0.7.0 (oracle.py) and through our
`render -o json`, both normalised into one shape, diffed per field, and every difference checked
against deviations.yaml.

    python runner.py --binary target/debug/singleuser-profiles [--only GLOB] [--show] [--draft]

Exit status 0 when every difference is in the table and every row of the table is still a
difference; 1 otherwise (a NEW difference, or a STALE row: fixed, so remove it). `--draft` prints
table rows for the unlisted differences (to review, never to paste blindly).

Scenario format (`corpus/<case>/scenarios.yaml`; `corpus/<case>/configmaps/` holds the ConfigMap
files both sides read, as `render --profiles` reads a folder):

    about: what the case checks
    scenarios:
    - id: small                 # the scenario is named <case>/<id>
      user: eje@redhat.com      # JupyterHub user name
      image: s2i-spark-minimal-notebook:3.6
      size: Small               # optional: the user's last_selected_size (JSP's spawn page)
      gpu: 1                    # optional: the user's GPU choice (JSP's spawn page)
      user_env: [{name: A, value: b}]  # optional: the user's own env (JSP's spawn page)
      ui: false                 # optional: no spawn-page posts: the folder holds the user's ConfigMaps
      namespace: opendatahub    # optional (default opendatahub)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ABSENT = "<absent>"
OWNER_PREFIX = "singleuser-service-ref-"


# --- loading ---------------------------------------------------------------------------------
def load_scenarios(only: str | None) -> list[dict]:
    scenarios = []
    for spec in sorted(CORPUS.glob("*/scenarios.yaml")):
        doc = yaml.safe_load(spec.read_text()) or {}
        case = spec.parent.name
        for s in doc.get("scenarios") or []:
            key = f"{case}/{s['id']}"
            if only and not fnmatch.fnmatch(key, only):
                continue
            scenario = {"key": key, "dir": str(spec.parent / "configmaps"), "namespace": "opendatahub", **s}
            scenario.pop("id")
            scenarios.append(scenario)
    keys = [s["key"] for s in scenarios]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        sys.exit(f"duplicate scenario ids: {sorted(duplicates)}")
    return scenarios


def load_cases() -> dict:
    """Per case: its folder and, where declared, the verdict `validate` must give."""
    cases = {}
    for spec in sorted(CORPUS.glob("*/scenarios.yaml")):
        doc = yaml.safe_load(spec.read_text()) or {}
        declared = doc.get("validate")
        if declared is not None and (declared.get("expect") not in ("pass", "fail") or not declared.get("why")):
            sys.exit(f"{spec}: `validate` needs `expect: pass|fail` and `why`")
        cases[spec.parent.name] = {"dir": str(spec.parent / "configmaps"), "validate": declared}
    return cases


def run_validate(binary: str, folder: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "SUP_LOG": "error", "SUP_TEMPLATE_KINDS": CORPUS_KINDS}
    proc = subprocess.run([binary, "validate", folder], capture_output=True, text=True, timeout=60, env=env)
    if proc.returncode not in (0, 1):
        sys.exit(f"validate {folder} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return {"passed": proc.returncode == 0, "output": proc.stdout.strip()}


def check_validate(scenarios, ours_results, cases, verdicts) -> tuple[int, int]:
    """`validate` must fail on every case where one of our spawns fails, unless the case
    declares otherwise (a failure that is the user's choice, not the config's), with why."""
    passed = failed = 0
    for case, verdict in verdicts.items():
        keys = [s["key"] for s in scenarios if s["key"].split("/")[0] == case]
        failing = [k for k in keys if ours_results[k].get("error")]
        declared = cases[case]["validate"]
        expect = declared["expect"] if declared else ("fail" if failing else "pass")
        got = "pass" if verdict["passed"] else "fail"
        if expect == got:
            passed += 1
            print(f"ok   validate {case}: {got}")
            continue
        failed += 1
        reason = declared["why"] if declared else (
            f"our spawn fails in {', '.join(failing)}" if failing else "every spawn of the case works")
        print(f"FAIL validate {case}: {got}, expected {expect} ({reason})")
        for line in verdict["output"].splitlines()[:10]:
            print(f"       {line}")
    return passed, failed


def run_jsp(scenarios: list[dict], python: str) -> dict:
    proc = subprocess.run([python, str(HERE / "oracle.py")], input=json.dumps({"scenarios": scenarios}),
                          capture_output=True, text=True, cwd=HERE, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"oracle.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


# The kinds the corpus's templates create: the default allowlist plus what its ODH deployments
# allowed (SparkCluster, JSP's docs' Example and Pod), as their operators would configure it.
CORPUS_KINDS = "RayCluster,Service,Route,Ingress,NetworkPolicy,ConfigMap,SparkCluster,Example,Pod"


def run_ours(scenario: dict, binary: str, work: Path, user_configmaps: list[dict]) -> dict:
    """`render` on the case's folder plus the user's settings ConfigMaps JSP's spawn page wrote
    (the size and GPU come from there, as in JSP: no --size)."""
    work.mkdir()
    (work / "user-settings.yaml").write_text(yaml.safe_dump_all(user_configmaps, sort_keys=False))
    args = [binary, "render", "--profiles", scenario["dir"], "--templates", str(work),
            "--user", scenario["user"], "--image", scenario["image"], "--namespace", scenario["namespace"],
            "-o", "json"]
    env = {"PATH": "/usr/bin:/bin", "SUP_LOG": "error", "SUP_TEMPLATE_KINDS": CORPUS_KINDS}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    stderr = proc.stderr.strip()
    if proc.returncode != 0:
        return {"error": stderr.splitlines()[-1] if stderr else f"exit {proc.returncode}", "stderr": stderr}
    return {"error": None, "answer": json.loads(proc.stdout), "stderr": stderr}


# --- normalising -----------------------------------------------------------------------------
def drop_nulls(value):
    """JSON null in a Kubernetes object means "not set": the API server drops it."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def env_spec(entry: dict):
    if "valueFrom" in entry:
        return {"valueFrom": entry["valueFrom"]}
    return entry.get("value", "")


def norm_jsp(result: dict) -> dict:
    if result.get("error"):
        e = result["error"]
        return {"outcome": "error", "message": f"{e['type']}: {e['message']} (in {e['where']}, {e['step']})"}
    objects, owner = [], None
    for w in result["writes"]:
        body = drop_nulls(w["body"] or {})
        name = body.get("metadata", {}).get("name", "")
        if body.get("kind") == "ConfigMap" and name.startswith(OWNER_PREFIX) and w["method"] == "POST":
            owner = name
            continue
        body.get("metadata", {}).pop("ownerReferences", None)
        body.get("metadata", {}).pop("resourceVersion", None)  # set by JSP's replace path
        same = [i for i, o in enumerate(objects) if identity(o) == identity(body)]
        if w["method"] == "PUT" and same:
            objects[same[-1]] = body
        elif w["method"] in ("POST", "PUT"):
            objects.append(body)
    pod = result["pod"]
    affinity = {k: v for k, v in pod["affinity"].items() if v}  # JSP always sets nodeAffinity, often {}
    return {
        "outcome": "ok",
        "env": [(e["name"], env_spec(e)) for e in result["env"]],
        "pod": {
            "resources": {side: drop_nulls(pod["resources"].get(side) or {}) for side in ("requests", "limits")},
            "tolerations": pod["tolerations"],
            "affinity": affinity,
            "labels": pod["labels"],
            "volumes": pod["volumes"],
            "volume_mounts": pod["volume_mounts"],
        },
        "objects": [tidy_object(o) for o in objects],
        "owner": owner,
    }


def norm_ours(result: dict) -> dict:
    if result.get("error"):
        return {"outcome": "error", "message": result["error"]}
    answer = result["answer"]
    pod = answer["pod"]
    return {
        "outcome": "ok",
        "env": [(k, ours_env_spec(v)) for k, v in answer["environment"].items()],
        "pod": {
            "resources": {side: dict(pod["resources"].get(side) or {}) for side in ("requests", "limits")},
            "tolerations": pod.get("tolerations") or [],
            "affinity": {k: v for k, v in (pod.get("affinity") or {}).items() if v},
            "labels": pod.get("labels") or {},
            "volumes": pod.get("volumes") or [],
            "volume_mounts": pod.get("volume_mounts") or [],
        },
        "objects": [tidy_object(o) for o in answer["objects"]],
        "owner": answer.get("owner"),
    }


def ours_env_spec(value):
    """hub/ passes a string as the value and a mapping as the EnvVar's other fields."""
    if isinstance(value, dict):
        return {"valueFrom": value["valueFrom"]} if "valueFrom" in value else str(value.get("value", ""))
    return value


def tidy_object(obj: dict) -> dict:
    obj = drop_nulls(json.loads(json.dumps(obj)))
    meta = obj.setdefault("metadata", {})
    meta.pop("namespace", None)  # JSP posts to the namespace's URL; ours names it in the object
    if meta.get("labels") == {}:
        del meta["labels"]
    return obj


def identity(obj: dict) -> str:
    return f"{obj.get('apiVersion')} {obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"


def strip_extensions(jsp: dict, ours: dict, extensions: list[dict]) -> None:
    """Fields only our side has by design (deviations.yaml `extensions`); dropped from ours only
    where JSP has no such field, so they never hide a JSP value."""
    for ext in extensions:
        where, name = ext["where"], ext["name"]
        if where == "env" and name not in {n for n, _ in jsp["env"]}:
            ours["env"] = [(n, v) for n, v in ours["env"] if n != name]
        elif where == "pod.labels" and name not in jsp["pod"]["labels"]:
            ours["pod"]["labels"].pop(name, None)
        elif where == "object.labels":
            for i, o in enumerate(ours["objects"]):
                theirs = jsp["objects"][i] if i < len(jsp["objects"]) else {}
                if name not in (theirs.get("metadata", {}).get("labels") or {}):
                    labels = o.get("metadata", {}).get("labels") or {}
                    labels.pop(name, None)
                    if not labels:
                        o["metadata"].pop("labels", None)


# --- diffing ---------------------------------------------------------------------------------
def key_segment(key: str) -> str:
    return f'["{key}"]' if any(c in key for c in './[]" ') or not key else f".{key}"


def flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            flatten(v, prefix + key_segment(str(k)), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def diff(jsp: dict, ours: dict) -> list[dict]:
    if jsp["outcome"] != ours["outcome"]:
        return [{"field": "outcome", "jsp": jsp["outcome"], "ours": ours["outcome"]}]
    if jsp["outcome"] == "error":
        return []
    found = []

    def add(field, a, b):
        if a != b:
            found.append({"field": field, "jsp": a, "ours": b})

    # env: one value per name (a list when a side repeats the name), then the order of the
    # names both sides have.
    def by_name(env):
        values: dict = {}
        for n, v in env:
            values.setdefault(n, []).append(v)
        return {n: vs[0] if len(vs) == 1 else vs for n, vs in values.items()}

    je, oe = by_name(jsp["env"]), by_name(ours["env"])
    for name in list(je) + [n for n in oe if n not in je]:
        add("env" + key_segment(name), je.get(name, ABSENT), oe.get(name, ABSENT))
    common = set(je) & set(oe)
    add("env.order", [n for n in je if n in common], [n for n in oe if n in common])

    def add_flat(a, b, prefix):
        jf, of = {}, {}
        flatten(a, prefix, jf)
        flatten(b, prefix, of)
        for path in list(jf) + [p for p in of if p not in jf]:
            x, y = jf.get(path, ABSENT), of.get(path, ABSENT)
            # An empty list or map on one side is the same as the other side's entries.
            empty_vs_entries = lambda v, other: v in ({}, []) and any(
                q.startswith(path + ".") or q.startswith(path + "[") for q in other)
            if (x == ABSENT and empty_vs_entries(y, jf)) or (y == ABSENT and empty_vs_entries(x, of)):
                continue
            add(path, x, y)

    add_flat(jsp["pod"], ours["pod"], "pod")
    if jsp["owner"] is not None or ours["objects"]:  # JSP makes its owner only for services
        add("owner", jsp["owner"], ours["owner"])

    jo, oo = jsp["objects"], ours["objects"]
    ji, oi = [identity(o) for o in jo], [identity(o) for o in oo]
    if ji != oi and sorted(ji) == sorted(oi):
        add("objects.order", ji, oi)
        oo = sorted(oo, key=lambda o: ji.index(identity(o)))
    for i in range(max(len(jo), len(oo))):
        if i >= len(jo) or i >= len(oo):
            add(f"objects[{i}]", identity(jo[i]) if i < len(jo) else ABSENT,
                identity(oo[i]) if i < len(oo) else ABSENT)
            continue
        add_flat(jo[i], oo[i], f"objects[{i}]")
    return found


# --- the table -------------------------------------------------------------------------------
def canonical(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def check(scenarios, jsp_results, ours_results, table, show: bool, draft: bool,
          validate: tuple[int, int] = (0, 0)) -> int:
    rows = table.get("deviations") or []
    for i, row in enumerate(rows):
        missing = [k for k in ("case", "field", "jsp", "ours", "status", "why") if k not in row]
        if missing or row["status"] not in ("bug", "intended"):
            sys.exit(f"deviations.yaml row {i + 1} ({row.get('case')}, {row.get('field')}): "
                     f"needs case, field, jsp, ours, status (bug|intended) and why")
    used = [False] * len(rows)
    new, passed, failed = [], 0, 0
    counts = {"bug": 0, "intended": 0}
    for s in scenarios:
        key = s["key"]
        jsp, ours = norm_jsp(jsp_results[key]), norm_ours(ours_results[key])
        if jsp["outcome"] == "ok" and ours["outcome"] == "ok":
            strip_extensions(jsp, ours, table.get("extensions") or [])
        diffs = diff(jsp, ours)
        unlisted = []
        for d in diffs:
            match = next((i for i, r in enumerate(rows) if r["case"] == key and r["field"] == d["field"]
                          and canonical(r["jsp"]) == canonical(d["jsp"])
                          and canonical(r["ours"]) == canonical(d["ours"])), None)
            if match is None:
                unlisted.append(d)
            else:
                used[match] = True
                counts[rows[match]["status"]] += 1
        stale = [r for i, r in enumerate(rows) if r["case"] == key and not used[i]]
        ok = not unlisted and not stale
        passed += ok
        failed += not ok
        listed = len(diffs) - len(unlisted)
        status = "ok  " if ok else "FAIL"
        outcome = f"jsp {jsp['outcome']}, ours {ours['outcome']}"
        print(f"{status} {key}: {outcome}; {len(diffs)} difference(s), {listed} listed")
        for label, side in (("jsp", jsp), ("ours", ours)):
            if side["outcome"] == "error" and (show or not ok or jsp["outcome"] != ours["outcome"]):
                print(f"       {label} error: {side['message']}")
        for d in unlisted:
            print(f"     NEW   {d['field']}: jsp={canonical(d['jsp'])} ours={canonical(d['ours'])}")
            new.append({"case": key, **d})
        for r in stale:
            print(f"     STALE {r['field']}: jsp={canonical(r['jsp'])} ours={canonical(r['ours'])} "
                  f"(no longer a difference: fixed? then remove the row)")
        if show:
            for d in diffs:
                print(f"       {d['field']}: jsp={canonical(d['jsp'])} ours={canonical(d['ours'])}")
    orphans = [r for i, r in enumerate(rows) if not used[i] and r["case"] not in {s["key"] for s in scenarios}]
    if orphans and len(scenarios) == len(load_scenarios(None)):
        for r in orphans:
            print(f"FAIL deviations.yaml names scenario {r['case']}, which the corpus does not have")
        failed += len(orphans)
    if draft and new:
        print("\n# draft rows for the unlisted differences:")
        print(yaml.safe_dump([{**d, "status": "bug", "why": "TODO"} for d in new], sort_keys=False,
                             allow_unicode=True, width=1000))
    passed += validate[0]
    failed += validate[1]
    print(f"\n{len(scenarios)} scenarios, {sum(validate)} validate verdicts; differences listed: "
          f"{counts['bug']} bug, {counts['intended']} intended; {len(new)} new")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--jsp-python", default=sys.executable)
    parser.add_argument("--only", help="glob over <case>/<id>")
    parser.add_argument("--table", default=str(HERE / "deviations.yaml"))
    parser.add_argument("--show", action="store_true", help="print every difference, listed or not")
    parser.add_argument("--draft", action="store_true", help="print draft rows for unlisted differences")
    parser.add_argument("--dump", help="write both sides' normalised results to this JSON file")
    args = parser.parse_args()

    scenarios = load_scenarios(args.only)
    if not scenarios:
        print("no scenario matched")
        return 1
    table = yaml.safe_load(Path(args.table).read_text()) or {}
    jsp_results = run_jsp(scenarios, args.jsp_python)
    with tempfile.TemporaryDirectory(prefix="jsp-ours-") as top:
        ours_results = {s["key"]: run_ours(s, args.binary, Path(top, f"s{i}"),
                                           jsp_results[s["key"]].get("user_configmaps") or [])
                        for i, s in enumerate(scenarios)}
    # `validate` on every case whose scenarios all ran.
    cases = load_cases()
    every = load_scenarios(None)
    complete = [c for c in cases if {s["key"] for s in every if s["key"].startswith(c + "/")}
                <= {s["key"] for s in scenarios}]
    verdicts = {c: run_validate(args.binary, cases[c]["dir"]) for c in complete}
    validate = check_validate(scenarios, ours_results, cases, verdicts)
    if args.dump:
        Path(args.dump).write_text(json.dumps(
            {s["key"]: {"jsp": jsp_results[s["key"]], "ours": ours_results[s["key"]]} for s in scenarios},
            indent=1, default=str))
    return check(scenarios, jsp_results, ours_results, table, args.show, args.draft, validate)


if __name__ == "__main__":
    sys.exit(main())
