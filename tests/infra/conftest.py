"""One synth of the CDK app for the whole session (bundles the Lambdas, runs cdk-nag)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@dataclass(frozen=True)
class Synth:
    stack: Any  # infra.stack.ExchangeStack
    template: Any  # aws_cdk.assertions.Template
    raw: dict[str, Any]  # the template as JSON
    outdir: Path

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.raw["Resources"].items() if v["Type"] == kind}

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    from aws_cdk import assertions

    from infra.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(outdir=str(outdir))
    app.synth()  # raises ValidationFailed on any unacknowledged cdk-nag finding
    raw = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return Synth(stack, assertions.Template.from_json(raw), raw, outdir)
