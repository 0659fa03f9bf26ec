"""The single-user command of the e2e hub: records the environment the spawner gave the
server process (what the hooks injected), then becomes `jupyterhub-singleuser` (same pid)."""

import json
import os
import sys

record = os.path.join(os.environ["HOME"], "e2e-singleuser-env.json")
with open(record + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"pid": os.getpid(), "env": dict(os.environ)}, f)
os.replace(record + ".tmp", record)
os.execvp("jupyterhub-singleuser", ["jupyterhub-singleuser", *sys.argv[1:]])
