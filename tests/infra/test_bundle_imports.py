"""Each function's handler imports with only the packages its bundle installs.

The bundle holds ``functions/<package>/requirements.txt`` and nothing else of the project's
dependencies, so a module that imports, say, psycopg at the top would fail the function's cold
start in AWS while every local test passes. This imports each handler in a fresh interpreter
in which the project's other third-party packages cannot be imported.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from infra import constants as c

# Import names of the third-party packages any bundle may carry, by requirement name.
IMPORT_NAMES = {
    "msgspec": {"msgspec"},
    "boto3": {"boto3", "botocore", "s3transfer", "jmespath"},
    "redis": {"redis", "hiredis"},
    "psycopg": {"psycopg", "psycopg_binary"},
    "aws-lambda-powertools": {"aws_lambda_powertools"},
    "aws-xray-sdk": {"aws_xray_sdk", "wrapt"},
    "fastapi": {"fastapi", "starlette", "pydantic", "pydantic_core", "anyio"},
    "mangum": {"mangum"},
    "cryptography": {"cryptography", "cffi"},
}
EVERYTHING = set().union(*IMPORT_NAMES.values()) | {"requests", "aiohttp", "sortedcontainers"}

PROBE = """
import importlib, os, sys

blocked = set(sys.argv[2].split(","))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not in this function's bundle", name=name)
        return None

sys.meta_path.insert(0, Blocker())
importlib.import_module(sys.argv[1])
"""

# Enough for each handler's settings to load at import (nothing is connected to).
DUMMY_ENVIRONMENT = {
    "ORDERS_QUEUE_URL": "http://127.0.0.1:1/queue/orders.fifo",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    "WS_MANAGEMENT_ENDPOINT": "http://127.0.0.1:1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "PATH": "/usr/bin:/bin",
}


def _requirements(package: str) -> set[str]:
    names = set()
    for line in (c.REPO_ROOT / "functions" / package / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[=<>~! ]", line, maxsplit=1)[0].lower())
    return names


@pytest.mark.parametrize("spec", c.FUNCTIONS, ids=lambda s: s.construct_id)
def test_handler_imports_with_only_its_bundled_packages(spec: c.FunctionSpec) -> None:
    requirements = _requirements(spec.package)
    assert requirements <= IMPORT_NAMES.keys(), requirements - IMPORT_NAMES.keys()
    allowed = set().union(*(IMPORT_NAMES[r] for r in requirements))
    blocked = sorted(EVERYTHING - allowed)
    module = spec.handler.rsplit(".", 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, ",".join(blocked)],
        cwd=c.REPO_ROOT,
        env={**DUMMY_ENVIRONMENT, "PYTHONPATH": str(c.REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
