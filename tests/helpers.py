"""Helpers shared by test modules (which never import each other, nor conftest).

`unavailable` is the one way a test says a tool or service is missing: a skip on a laptop, a
failure under CI, where every service and tool the suite uses is required.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NoReturn

import pytest


def ci_requires_services(value: str | None) -> bool:
    """Whether this CI value makes every service required: CI=1 and CI=yes count, CI=false not.

    The same rule as `docker/services.sh ci-requires`, which the Makefile's test target uses.
    """
    return value is not None and value.lower() not in ("", "false", "0")


IN_CI = ci_requires_services(os.environ.get("CI"))


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it under CI (a missing service or tool is never a silent skip)."""
    if IN_CI:
        pytest.fail(f"CI={os.environ['CI']} requires every service and tool: {message}")
    pytest.skip(message)


@dataclasses.dataclass(frozen=True)
class SecuredKafka:
    """The SASL_SSL + SCRAM-SHA-512 listener of docker/services.sh."""

    bootstrap: str
    username: str
    password: str
    cafile: str

    def env(self) -> dict[str, str]:
        """The ORDERPIPE_* variables that point orderpipe at it."""
        return {
            "ORDERPIPE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ORDERPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ORDERPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "ORDERPIPE_KAFKA_SASL_USERNAME": self.username,
            "ORDERPIPE_KAFKA_SASL_PASSWORD": self.password,
            "ORDERPIPE_KAFKA_SSL_CAFILE": self.cafile,
        }
