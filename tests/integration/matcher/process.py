"""The matcher as a real process (``python -m pago.matcher``), as Kubernetes would run it."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from tests.support.matcher import BASE_URL, aml_dir
from tests.support.processes import ServiceProcess, module

FAST_GROUP = {
    # A SIGKILLed member holds its partitions until the group gives up on it (and the mock
    # broker treats a member that left cleanly the same way); production keeps 10 s, the tests
    # restart within about a second of it.
    "PAGO_MATCHER_SESSION_TIMEOUT_MS": "1000",
    "PAGO_MATCHER_HEARTBEAT_MS": "250",
}


class MatcherProcess(ServiceProcess):
    """One ``pago-matcher`` process in consumer group ``group_id``, polling fast."""

    def __init__(self, env: Mapping[str, str], *, group_id: str, **settings: str) -> None:
        env = {
            **env,
            "PAGO_MATCHER_HTTP_PORT": "0",
            "PAGO_AML_LIST_PATH": str(aml_dir()),
            "PAGO_CHECKOUT_BASE_URL": BASE_URL,
            "PAGO_MATCHER_BATCH_WAIT_MS": "20",
            "PAGO_MATCHER_FETCH_WAIT_MS": "50",
            "PAGO_MATCHER_RETRY_MAX_BACKOFF": "0.5",
            **FAST_GROUP,
            "PAGO_MATCHER_GROUP_ID": group_id,
            **settings,
        }
        super().__init__("pago-matcher", module("pago.matcher"), env)

    def started(self, timeout: float = 20.0) -> int:
        """Wait for the start log line; return the health port."""
        return int(self.wait_log("matcher started", timeout)["http_port"])

    def get(self, port: int, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
