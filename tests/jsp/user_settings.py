"""What JSP 0.7.0's own `user.py` reads from a user's settings ConfigMaps.

Reads `{"namespace", "user", "configmaps": [...]}` as JSON on stdin (the ConfigMaps as the API
server holds them), serves them through fakekube.py at the kubernetes client's REST layer, and
writes `User.get(user)` (what JSP's spawn page and spawner read) as JSON on stdout. The plane
test that saves settings through this service's JSP API compares it with what it saved.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import fakekube
from oracle import KUBECONFIG


def main() -> int:
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster config
    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="jsp-user-settings-") as top:
        # Before the kubernetes client is imported: it reads KUBECONFIG then.
        kubeconfig = Path(top, "kubeconfig")
        kubeconfig.write_text(KUBECONFIG)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        cluster = fakekube.FakeCluster()
        for cm in request["configmaps"]:
            cluster.put(cm, request["namespace"])
        fakekube.install(cluster)
        tempfile.tempdir = top  # the DynamicClient's discovery cache
        from jupyterhub_singleuser_profiles.profiles import SingleuserProfiles

        profiles = SingleuserProfiles(namespace=request["namespace"], verify_ssl=False)
        json.dump(profiles.user.get(request["user"]), sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
