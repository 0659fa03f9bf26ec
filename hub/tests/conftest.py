"""Fixtures for the hook tests (see hub_support.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from hub_support import REPO, TEST_PROFILES, TOKEN, Service, use_dummy_kubeconfig

use_dummy_kubeconfig()


@pytest.fixture(scope="session")
def profiles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("profiles")
    for source in (REPO / "profiles").glob("*.yaml"):
        shutil.copy(source, folder / source.name)
    (folder / "test-hub-profiles.yaml").write_text(TEST_PROFILES)
    return folder


@pytest.fixture(scope="session")
def service(profiles_dir: Path) -> Iterator[Service]:
    svc = Service(profiles_dir, token=TOKEN)
    yield svc
    svc.stop()


@pytest.fixture
def settings_env(service: Service, monkeypatch: pytest.MonkeyPatch) -> Service:
    """Points the hooks at the service through the environment, as a hub deployment may."""
    monkeypatch.setenv("SINGLEUSER_PROFILES_URL", service.url)
    monkeypatch.setenv("SINGLEUSER_PROFILES_TOKEN", TOKEN)
    monkeypatch.setenv("SINGLEUSER_PROFILES_RETRY_BACKOFF", "0.05")
    return service


