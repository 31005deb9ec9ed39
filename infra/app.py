"""The CDK app: ``cdk synth`` / ``cdk deploy`` run this (cdk.json), and so do the tests.

Context: ``-c cloudex:multiAz=true`` puts RDS in Multi-AZ; ``-c cloudex:alarmEmail=...``
subscribes an address to the alarms; ``-c cloudex:fanoutReservedConcurrency=100`` reserves
Lambda concurrency for the WebSocket fan-out. cdk-nag's AWS Solutions checks run on every synth; a
finding not acknowledged in infra/nag.py fails it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by the cdk CLI: make `infra` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra import constants as c
from infra.nag import acknowledge_findings
from infra.stack import ExchangeStack

__all__ = ["build_app"]


def _flag(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def project_context() -> dict[str, object]:
    """cdk.json's context (feature flags, defaults). The CLI passes it to the app itself; the
    tests and ``./dev synth`` read it here, so they synthesize what ``cdk deploy`` deploys."""
    if "CDK_CONTEXT_JSON" in os.environ or "CDK_CONTEXT_FILE" in os.environ:
        return {}
    settings = json.loads((c.REPO_ROOT / "cdk.json").read_text())
    return dict(settings.get("context", {}))


def build_app(
    outdir: str | None = None, context: dict[str, object] | None = None
) -> tuple[cdk.App, ExchangeStack]:
    app = cdk.App(outdir=outdir, context={**project_context(), **(context or {})})
    stack = ExchangeStack(
        app,
        c.STACK_NAME,
        multi_az=_flag(app.node.try_get_context(c.CONTEXT_MULTI_AZ)),
        alarm_email=app.node.try_get_context(c.CONTEXT_ALARM_EMAIL) or None,
        fanout_reserved_concurrency=int(
            app.node.try_get_context(c.CONTEXT_FANOUT_CONCURRENCY) or 0
        ),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    acknowledge_findings(stack)
    return app, stack


if __name__ == "__main__":
    # The cdk CLI says where (CDK_OUTDIR); run directly (./dev synth), it is cdk.out/ as well.
    build_app(outdir=None if "CDK_OUTDIR" in os.environ else str(c.REPO_ROOT / "cdk.out"))[
        0
    ].synth()
