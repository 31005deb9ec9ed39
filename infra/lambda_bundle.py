"""One helper builds every Lambda function: its code bundled locally, without Docker.

A bundle is the function's package (``functions/<package>/``), ``functions/__init__.py`` and
the shared ``cloudex/`` package, plus the wheels of ``functions/<package>/requirements.txt``
installed for Lambda's platform (``pip install --platform manylinux2014_x86_64
--only-binary=:all:``), so the bundle is right for Lambda whatever machine synthesizes it.

The installed wheels are cached per requirements file under ``~/.cache/cloudex/lambda-deps``
(or ``$CLOUDEX_BUNDLE_CACHE``): a second synth copies them instead of asking PyPI again. The
asset hash covers exactly what goes in, so an unchanged function is not uploaded again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import constants as c
from infra.components.network import Network
from infra.log_groups import log_group

__all__ = ["bundle_files", "build_function", "PipLocalBundling"]

_SKIP_NAMES = {"__pycache__", "requirements.txt"}
_RUNTIME = lambda_.Runtime.PYTHON_3_14


def bundle_files(package: str) -> Iterator[tuple[Path, str]]:
    """Every source file of ``package``'s bundle: (absolute path, path inside the bundle)."""
    root = c.REPO_ROOT
    yield root / "functions" / "__init__.py", "functions/__init__.py"
    for top in (root / "cloudex", root / "functions" / package):
        for path in sorted(top.rglob("*")):
            if path.is_file() and not _SKIP_NAMES.intersection(path.relative_to(root).parts):
                yield path, path.relative_to(root).as_posix()


def _requirements(package: str) -> Path:
    return c.REPO_ROOT / "functions" / package / "requirements.txt"


def _dependency_key(package: str) -> str:
    digest = hashlib.sha256(_requirements(package).read_bytes())
    digest.update(f"{c.LAMBDA_PYTHON} {c.LAMBDA_ARCHITECTURE_PLATFORM}".encode())
    return digest.hexdigest()[:32]


def asset_hash(package: str) -> str:
    digest = hashlib.sha256(_dependency_key(package).encode())
    for path, name in bundle_files(package):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cache_root() -> Path:
    configured = os.environ.get("CLOUDEX_BUNDLE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "cloudex" / "lambda-deps"


def _installed_dependencies(package: str) -> Path:
    """The directory holding ``package``'s wheels installed for Lambda (built once, cached)."""
    target = _cache_root() / _dependency_key(package)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--requirement", str(_requirements(package)),
                "--target", str(staging),
                "--platform", c.LAMBDA_ARCHITECTURE_PLATFORM,
                "--implementation", "cp",
                "--python-version", c.LAMBDA_PYTHON,
                "--only-binary=:all:",
                "--no-compile",
            ],
            check=False,
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pip could not build {package}'s dependencies:\n{result.stderr}")
        staging.rename(target)  # atomic: a concurrent synth sees all of it or none
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@jsii.implements(cdk.ILocalBundling)
class PipLocalBundling:
    """Bundles a function on this machine (CDK calls ``try_bundle`` instead of Docker)."""

    def __init__(self, package: str) -> None:
        self.package = package

    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_: object) -> bool:
        out = Path(output_dir)
        shutil.copytree(_installed_dependencies(self.package), out, dirs_exist_ok=True)
        for path, name in bundle_files(self.package):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / name)
        return True


def function_code(package: str) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(c.REPO_ROOT / "functions" / package),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=asset_hash(package),
        bundling=cdk.BundlingOptions(
            # Only used where local bundling is impossible; it never is where pip runs.
            image=_RUNTIME.bundling_image,
            local=PipLocalBundling(package),
            command=["false"],
        ),
    )


_code_cache: dict[tuple[int, str], lambda_.Code] = {}


def build_function(
    scope: Construct,
    spec: c.FunctionSpec,
    *,
    network: Network,
    security_group: ec2.ISecurityGroup,
    environment: Mapping[str, str],
    subnets: ec2.SubnetSelection | None = None,
    reserved_concurrency: int | None = None,
) -> lambda_.Function:
    """A function from ``spec``: Python on x86_64, in the VPC (the isolated App subnets unless
    ``subnets`` says otherwise), traced, with its own log group (kept a month) and the
    Powertools settings every handler reads."""
    stack = cdk.Stack.of(scope)
    key = (id(stack), spec.package)
    if key not in _code_cache:  # the three WebSocket routes share one bundle
        _code_cache[key] = function_code(spec.package)
    logs_of_function = log_group(scope, f"{spec.construct_id}Logs")
    return lambda_.Function(
        scope,
        spec.construct_id,
        runtime=_RUNTIME,
        architecture=lambda_.Architecture.X86_64,
        code=_code_cache[key],
        handler=spec.handler,
        memory_size=spec.memory_mb,
        timeout=cdk.Duration.seconds(spec.timeout_s),
        description=spec.description,
        vpc=network.vpc,
        vpc_subnets=subnets or network.app_subnets,
        security_groups=[security_group],
        environment={
            "POWERTOOLS_SERVICE_NAME": spec.package,
            "POWERTOOLS_METRICS_NAMESPACE": c.METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **environment,
        },
        tracing=lambda_.Tracing.ACTIVE,
        log_group=logs_of_function,
        reserved_concurrent_executions=reserved_concurrency,
    )
