"""The comparison itself must be able to fail: unit tests of runner.py's normalising and diffing."""

import contextlib
import copy
import io
import unittest

import runner

JSP_OK = {
    "error": None,
    "env": [{"name": "SPARK_CLUSTER", "value": "spark-a"}, {"name": "A", "value": "1"},
            {"name": "A", "value": "2"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    "pod": {"resources": {"limits": {"memory": "2Gi", "cpu": None}, "requests": {"memory": "1Gi"}},
            "tolerations": [], "affinity": {"nodeAffinity": {}}, "labels": {"jupyterhub.opendatahub.io/user": "a"},
            "volumes": [], "volume_mounts": [], "security_context": {}},
    "writes": [
        {"method": "POST", "path": "/api/v1/namespaces/ns/configmaps",
         "body": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "singleuser-service-ref-a"}, "data": {}}},
        {"method": "POST", "path": "/apis/x/v1/namespaces/ns/things",
         "body": {"kind": "Thing", "apiVersion": "x/v1", "metadata": {"name": "t-a", "labels": None,
                  "ownerReferences": [{"name": "singleuser-service-ref-a"}]}, "spec": {"n": 1}}},
    ],
}
OURS_OK = {
    "error": None,
    "answer": {
        "environment": {"SPARK_CLUSTER": "spark-a", "A": "2", "S": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        "RAY_CLUSTER": "ray-a"},
        "pod": {"resources": {"limits": {"memory": "2Gi"}, "requests": {"memory": "1Gi"}}, "tolerations": [],
                "affinity": {}, "labels": {"jupyterhub.opendatahub.io/user": "a", "jupyterhub.opendatahub.io/ray-cluster": "ray-a"},
                "volumes": [], "gpu": 0},
        "objects": [{"kind": "Thing", "apiVersion": "x/v1",
                     "metadata": {"name": "t-a", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "singleuser-profiles"}},
                     "spec": {"n": 1}}],
        "owner": "singleuser-service-ref-a",
    },
}
EXTENSIONS = [{"where": "env", "name": "RAY_CLUSTER"},
              {"where": "pod.labels", "name": "jupyterhub.opendatahub.io/ray-cluster"},
              {"where": "object.labels", "name": "app.kubernetes.io/managed-by"}]


def differences(jsp, ours):
    j, o = runner.norm_jsp(jsp), runner.norm_ours(ours)
    if j["outcome"] == o["outcome"] == "ok":
        runner.strip_extensions(j, o, EXTENSIONS)
    return {d["field"]: (d["jsp"], d["ours"]) for d in runner.diff(j, o)}


class Diff(unittest.TestCase):
    def test_equal_answers_differ_only_where_jsp_repeats_a_name(self):
        self.assertEqual(differences(JSP_OK, OURS_OK), {"env.A": (["1", "2"], "2")})

    def test_a_changed_value_an_object_field_and_a_missing_label_are_differences(self):
        ours = copy.deepcopy(OURS_OK)
        ours["answer"]["environment"]["SPARK_CLUSTER"] = "other"
        ours["answer"]["objects"][0]["spec"]["n"] = 2
        del ours["answer"]["pod"]["labels"]["jupyterhub.opendatahub.io/user"]
        found = differences(JSP_OK, ours)
        self.assertEqual(found["env.SPARK_CLUSTER"], ("spark-a", "other"))
        self.assertEqual(found["objects[0].spec.n"], (1, 2))
        self.assertEqual(found['pod.labels["jupyterhub.opendatahub.io/user"]'], ("a", runner.ABSENT))

    def test_order_is_compared_on_the_common_names(self):
        ours = copy.deepcopy(OURS_OK)
        env = ours["answer"]["environment"]
        ours["answer"]["environment"] = {k: env[k] for k in ("A", "SPARK_CLUSTER", "S", "RAY_CLUSTER")}
        self.assertEqual(differences(JSP_OK, ours)["env.order"],
                         (["SPARK_CLUSTER", "A", "S"], ["A", "SPARK_CLUSTER", "S"]))

    def test_an_extension_never_hides_a_jsp_value(self):
        jsp = copy.deepcopy(JSP_OK)
        jsp["env"].append({"name": "RAY_CLUSTER", "value": "from-profile"})
        self.assertEqual(differences(jsp, OURS_OK)["env.RAY_CLUSTER"], ("from-profile", "ray-a"))

    def test_an_object_label_extension_never_hides_the_template_label(self):
        jsp = copy.deepcopy(JSP_OK)
        jsp["writes"][1]["body"]["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "helm"}
        self.assertEqual(differences(jsp, OURS_OK)['objects[0].metadata.labels["app.kubernetes.io/managed-by"]'],
                         ("helm", "singleuser-profiles"))

    def test_one_side_failing_is_the_only_difference(self):
        jsp = dict(JSP_OK, error={"type": "KeyError", "message": "'labels'", "where": "f", "step": "s"})
        self.assertEqual(differences(jsp, OURS_OK), {"outcome": ("error", "ok")})
        self.assertEqual(differences(jsp, {"error": "error: x"}), {})

    def test_an_extra_object_is_named(self):
        ours = copy.deepcopy(OURS_OK)
        ours["answer"]["objects"].append({"kind": "Route", "apiVersion": "route.openshift.io/v1",
                                          "metadata": {"name": "r"}})
        self.assertEqual(differences(JSP_OK, ours)["objects[1]"],
                         (runner.ABSENT, "route.openshift.io/v1 Route r"))


class Table(unittest.TestCase):
    ROW = {"case": "c/s", "field": "env.A", "jsp": ["1", "2"], "ours": "2", "status": "bug", "why": "x"}

    def run_check(self, rows):
        scenario = {"key": "c/s"}
        table = {"extensions": EXTENSIONS, "deviations": rows}
        with contextlib.redirect_stdout(io.StringIO()):
            return runner.check([scenario], {"c/s": JSP_OK}, {"c/s": OURS_OK}, table, show=False, draft=False)

    def test_a_listed_difference_passes_an_unlisted_or_stale_one_fails(self):
        self.assertEqual(self.run_check([self.ROW]), 0)
        self.assertEqual(self.run_check([]), 1)
        self.assertEqual(self.run_check([self.ROW, dict(self.ROW, field="env.B")]), 1)
        self.assertEqual(self.run_check([dict(self.ROW, ours="1")]), 1)


if __name__ == "__main__":
    unittest.main()


class ValidateVerdicts(unittest.TestCase):
    SCENARIOS = [{"key": "c/ok"}, {"key": "c/broken"}, {"key": "d/ok"}]
    OURS = {"c/ok": {"error": None}, "c/broken": {"error": "error: x"}, "d/ok": {"error": None}}

    def verdicts(self, c_passes: bool, d_passes: bool, declared=None):
        cases = {"c": {"validate": declared}, "d": {"validate": None}}
        verdicts = {"c": {"passed": c_passes, "output": ""}, "d": {"passed": d_passes, "output": ""}}
        with contextlib.redirect_stdout(io.StringIO()):
            return runner.check_validate(self.SCENARIOS, self.OURS, cases, verdicts)

    def test_validate_must_fail_where_a_spawn_fails_and_pass_elsewhere(self):
        self.assertEqual(self.verdicts(c_passes=False, d_passes=True), (2, 0))
        self.assertEqual(self.verdicts(c_passes=True, d_passes=True), (1, 1))
        self.assertEqual(self.verdicts(c_passes=False, d_passes=False), (1, 1))

    def test_a_declared_verdict_wins(self):
        declared = {"expect": "pass", "why": "the user's choice"}
        self.assertEqual(self.verdicts(c_passes=True, d_passes=True, declared=declared), (2, 0))
        self.assertEqual(self.verdicts(c_passes=False, d_passes=True, declared=declared), (1, 1))

