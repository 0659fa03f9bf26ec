"""JupyterHub hooks for singleuser-profiles: every notebook gets its own Ray cluster.

`pre_spawn_hook`, `post_stop_hook` and `profile_list` are ready for `jupyterhub_config.py`;
`SingleuserProfiles` holds their configuration (`c.SingleuserProfiles.url = ...`).
"""

from .client import ProfilesClient, ServiceError, ServiceUnavailable
from .hooks import (
    ProfilesProgressMixin,
    SingleuserProfiles,
    SpawnRefused,
    apply_answer,
    post_stop_hook,
    pre_spawn_hook,
    profile_list,
    spawn_request,
)

__version__ = "0.1.0"

__all__ = [
    "ProfilesClient",
    "ProfilesProgressMixin",
    "ServiceError",
    "ServiceUnavailable",
    "SingleuserProfiles",
    "SpawnRefused",
    "apply_answer",
    "post_stop_hook",
    "pre_spawn_hook",
    "profile_list",
    "spawn_request",
]
