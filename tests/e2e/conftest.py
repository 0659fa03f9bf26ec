"""Fixtures for the end-to-end tests (run them with tests/e2e/run)."""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest

from e2e_support import Hub, Settings, tail


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def service(settings: Settings) -> Iterator[httpx.Client]:
    """The service tests/e2e/run started (cluster mode), with the hub's token."""
    with httpx.Client(base_url=settings.url, timeout=180,
                      headers={"Authorization": f"token {settings.token}"}) as client:
        yield client


@pytest.fixture(scope="session")
def hub(settings: Settings) -> Iterator[Hub]:
    running = Hub(settings)
    yield running
    running.stop()
    print(f"\n--- tail of {running.log_path}\n{tail(running.log_path, 30)}")
