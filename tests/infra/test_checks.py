"""The security checks, the template linter, and what the template points at."""

from __future__ import annotations

import ast
import json
import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloudex.queues import QUEUES, QueueSpec
from infra import constants as c
from tests.infra.conftest import Synth

# cfn-lint warnings on the synthesized template, each explained. Anything else fails.
EXPLAINED_CFN_LINT_WARNINGS = {
    # The CDK adds an explicit DependsOn from each function to its role's default policy (so
    # the policy exists before the function runs), and lints as redundant where a GetAtt of
    # the role already orders them; harmless.
    "W3005",
}


# --- cdk-nag ---------------------------------------------------------------------------------


def test_nag_acknowledgements_all_carry_a_reason(synth: Synth) -> None:
    # The synth fixture already proved there is no unacknowledged finding (it raises).
    import aws_cdk as cdk

    reasons: list[tuple[str, str]] = []
    for construct in synth.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                reasons += [
                    (rule, reason)
                    for rule, reason in entry.data.items()
                    if "AwsSolutions-" in rule  # the CDK acknowledges a few of its own
                ]
    assert len(reasons) >= 20
    for rule, reason in reasons:
        assert len(reason) >= 40, (rule, reason)


def test_nag_fails_the_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs
    from cdk_nag import AwsSolutionsChecks

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Bad")
    sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.UNENCRYPTED)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert "AwsSolutions-SQS4" in rules  # no TLS enforcement


# --- cfn-lint --------------------------------------------------------------------------------


def test_cfn_lint_finds_no_error_and_no_unexplained_warning(synth: Synth) -> None:
    from cfnlint.api import lint_file

    matches = lint_file(synth.outdir / f"{synth.stack.stack_name}.template.json")
    errors = [str(m) for m in matches if m.rule.id.startswith("E")]
    assert errors == []
    unexplained = [
        str(m)
        for m in matches
        if m.rule.id not in EXPLAINED_CFN_LINT_WARNINGS and not m.rule.id.startswith("E")
    ]
    assert unexplained == []


# --- queues: CDK == LocalStack == cloudex/queues.py ------------------------------------------


def _expected(spec: QueueSpec, name_of: dict[str, str]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "fifo": spec.fifo,
        "content_based_deduplication": spec.content_based_deduplication,
        "visibility": spec.visibility_timeout_s,
        "retention": spec.retention_s,
        "high_throughput": spec.high_throughput,
        "dead_letter": (spec.dead_letter, spec.max_receive_count) if spec.dead_letter else None,
    }


def test_cdk_queues_match_the_specs(synth: Synth) -> None:
    prefix = f"{synth.stack.stack_name}-"
    by_logical_id = synth.resources("AWS::SQS::Queue")
    names = {
        lid: q["Properties"]["QueueName"].removeprefix(prefix) for lid, q in by_logical_id.items()
    }
    deployed = {}
    for lid, queue in by_logical_id.items():
        p = queue["Properties"]
        redrive = p.get("RedrivePolicy")
        deployed[names[lid]] = {
            "name": names[lid],
            "fifo": p["FifoQueue"],
            "content_based_deduplication": p.get("ContentBasedDeduplication", False),
            "visibility": p["VisibilityTimeout"],
            "retention": p["MessageRetentionPeriod"],
            "high_throughput": p.get("DeduplicationScope") == "messageGroup"
            and p.get("FifoThroughputLimit") == "perMessageGroupId",
            "dead_letter": (
                names[redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]],
                redrive["maxReceiveCount"],
            )
            if redrive
            else None,
        }
    assert deployed == {spec.name: _expected(spec, names) for spec in QUEUES}


@pytest.fixture
def localstack_sqs() -> Any:
    from localstack.create_queues import DEFAULT_ENDPOINT, REGION  # type: ignore[import-not-found]

    client = boto3.client(
        "sqs",
        endpoint_url=DEFAULT_ENDPOINT,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return client


def test_localstack_queues_match_the_specs(localstack_sqs: Any) -> None:
    import importlib.util

    from infra.constants import REPO_ROOT

    module_spec = importlib.util.spec_from_file_location(
        "create_queues", REPO_ROOT / "localstack" / "create_queues.py"
    )
    assert module_spec and module_spec.loader
    create_queues = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(create_queues)

    prefix = f"infra-{uuid.uuid4().hex[:8]}-"
    urls = create_queues.create_queues(localstack_sqs, prefix)
    try:
        created = {}
        arn_names = {}
        attributes_by_name = {}
        for name, url in urls.items():
            attributes = localstack_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
                "Attributes"
            ]
            attributes_by_name[name] = attributes
            arn_names[attributes["QueueArn"]] = name
        for name, a in attributes_by_name.items():
            redrive = json.loads(a["RedrivePolicy"]) if "RedrivePolicy" in a else None
            created[name] = {
                "name": name,
                "fifo": a["FifoQueue"] == "true",
                "content_based_deduplication": a["ContentBasedDeduplication"] == "true",
                "visibility": int(a["VisibilityTimeout"]),
                "retention": int(a["MessageRetentionPeriod"]),
                "high_throughput": a.get("DeduplicationScope") == "messageGroup"
                and a.get("FifoThroughputLimit") == "perMessageGroupId",
                "dead_letter": (
                    arn_names[redrive["deadLetterTargetArn"]],
                    int(redrive["maxReceiveCount"]),
                )
                if redrive
                else None,
            }
        assert created == {spec.name: _expected(spec, {}) for spec in QUEUES}
    finally:
        for url in urls.values():
            localstack_sqs.delete_queue(QueueUrl=url)


# --- handlers and environment point at code that exists --------------------------------------


def _asset_dir(synth: Synth, function: dict[str, Any]) -> Path:
    key = function["Properties"]["Code"]["S3Key"]
    return synth.outdir / f"asset.{key.removesuffix('.zip')}"


def _sources(root: Path, packages: tuple[str, ...]) -> str:
    return "\n".join(
        path.read_text() for package in packages for path in sorted((root / package).rglob("*.py"))
    )


@pytest.mark.parametrize("spec", c.FUNCTIONS, ids=lambda s: s.construct_id)
def test_function_handler_and_environment_exist_in_its_bundle(
    synth: Synth, spec: c.FunctionSpec
) -> None:
    (function,) = [
        f
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == spec.handler
    ]
    bundle = _asset_dir(synth, function)
    module, attribute = spec.handler.rsplit(".", 1)
    source = bundle / (module.replace(".", "/") + ".py")
    assert source.is_file(), source
    tree = ast.parse(source.read_text())
    defined = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in ast.walk(node)
        if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store)
    } | {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert attribute in defined
    # The bundle carries the wheels it imports, built for Lambda (manylinux, its Python).
    assert (bundle / "cloudex" / "__init__.py").is_file()
    assert (bundle / "aws_lambda_powertools").is_dir()
    assert any(bundle.glob(f"*cpython-{c.LAMBDA_PYTHON.replace('.', '')}*")) or any(
        bundle.rglob(f"*.cpython-{c.LAMBDA_PYTHON.replace('.', '')}-x86_64-linux-gnu.so")
    )
    ours = _sources(bundle, ("cloudex", "functions"))
    powertools = "POWERTOOLS_"
    for name in function["Properties"]["Environment"]["Variables"]:
        if name.startswith(powertools):
            continue
        assert re.search(rf"\b{name}\b", ours), f"{spec.handler}: nothing reads {name}"


def test_engine_environment_is_read_by_the_engine(synth: Synth) -> None:
    (task,) = synth.resources("AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    code = _sources(c.REPO_ROOT, ("engine_service", "cloudex"))
    read_by_boto3 = {"AWS_REGION", "AWS_DEFAULT_REGION"}
    for variable in container["Environment"]:
        if variable["Name"] not in read_by_boto3:
            assert re.search(rf"\b{variable['Name']}\b", code), variable["Name"]
    assert (c.REPO_ROOT / c.ENGINE_DOCKERFILE).is_file()
