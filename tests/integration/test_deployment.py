"""The AWS deployment: template.yaml lints and validates, `make build` builds it without Docker,
every function fits Lambda's size limit, the dependencies layer is complete (an x86_64 build of
it imports the handlers and embeds a photo in a clean interpreter), and the template's wiring
agrees with what the handlers and the settings expect.

The SAM CLI environment (.venv-sam) and the builds are cached: `make build` uses `sam build
--cached`, and the x86_64 layer is rebuilt only when its requirements or Makefile change, so a
second run takes seconds.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cloudformation import load_template

from lookalike.model.embedder import get_embedder
from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
BUILD_DIR = REPO_ROOT / ".aws-sam" / "build"
X86_DIR = REPO_ROOT / ".aws-sam" / "x86_64"
SAM_PYTHON = REPO_ROOT / ".venv-sam" / "bin" / "python"
RDS_CA_BUNDLE = REPO_ROOT / "layers" / "certificates" / "global-bundle.pem"
TEST_OUTPUT = REPO_ROOT / "test-output"
# Lambda: a function's code plus all its layers, unzipped, at most 250 MB (262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
SETTINGS_SOURCES = [
    REPO_ROOT / "layers/shared/python/lookalike/settings.py",
    REPO_ROOT / "layers/shared/python/lookalike/catalogue.py",
    *sorted((REPO_ROOT / "layers/shared/python/lookalike_aws").glob("*.py")),
]
# Variables the code reads that the template leaves unset on purpose.
NOT_IN_TEMPLATE = {
    "DATABASE_URL": "Lambda reads DATABASE_SECRET_ARN; a URL would hold the password in plain text",
    "LOOKALIKE_DATA_DIR": "local state (embedded PostgreSQL) only",
    "S3_ENDPOINT_URL": "local S3-compatible endpoints (moto) only",
    "RESIZE_MODE": "the model card's default; changing it changes every embedding",
    "DB_CONNECT_TIMEOUT_S": "the default (5 s) suits a database in the same region",
    "DB_LOCK_TIMEOUT_MS": "writes only: the default fails a stuck batch well inside the ingest Timeout",
    "DB_STATEMENT_TIMEOUT_MS": "writes only: the default stays below the ingest function's Timeout",
}

# Set by Lambda itself in every function (reserved: a template may not set them).
LAMBDA_RESERVED_PREFIXES = ("AWS_", "LAMBDA_", "_")


def _run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 1200) -> str:
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{output[-6000:]}"
    return output


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a figure to the terminal, whatever pytest's output capture."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n[deployment] {line}")

    return write


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource.get("Properties") or {}
        for name, resource in template["Resources"].items()
        if resource.get("Type") == kind
    }


def _parameter_default(template: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return template["Parameters"][value["Ref"]]["Default"]
    return value


def _logical_id(value: Any) -> str:
    """The logical id a Ref or GetAtt points at."""
    assert isinstance(value, dict), value
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def _sqs_event(template: dict[str, Any]) -> dict[str, Any]:
    events = _resources(template, "AWS::Serverless::Function")["IngestFunction"]["Events"]
    (event,) = (e["Properties"] for e in events.values() if e["Type"] == "SQS")
    return dict(event)


# --- lint, validate, build --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam_build() -> Path:
    """`make build` (sam build without containers; cached): the built functions and layers.

    Amazon RDS's CA bundle is a download from AWS that no package ships (docs/DEPLOYMENT.md,
    "Database TLS"); without it the certificates layer holds only the RDS Proxy roots."""
    allow = {} if RDS_CA_BUNDLE.is_file() else {"ALLOW_MISSING_RDS_CA": "1"}
    output = _run(["make", "build"], env=allow)
    assert "Build Succeeded" in output, output[-3000:]
    return BUILD_DIR


def test_template_passes_cfn_lint_and_sam_validate() -> None:
    output = _run(["make", "validate"])
    assert "is a valid SAM Template" in output


def _tree_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def _function_layers(template: dict[str, Any], function: dict[str, Any]) -> list[str]:
    layers = function.get("Layers") or template.get("Globals", {}).get("Function", {}).get("Layers") or []
    return [_logical_id(layer) for layer in layers]


def test_every_function_with_its_layers_fits_lambda(
    sam_build: Path, template: dict[str, Any], report: Callable[[str], None]
) -> None:
    functions = _resources(template, "AWS::Serverless::Function")
    sizes: dict[str, Any] = {}
    for name, function in functions.items():
        parts = {name: _tree_bytes(sam_build / name)}
        parts |= {layer: _tree_bytes(sam_build / layer) for layer in _function_layers(template, function)}
        total = sum(parts.values())
        sizes[name] = {"total_bytes": total, "parts_bytes": parts}
        report(
            f"{name}: {total / 2**20:.1f} MiB unzipped of Lambda's 250 MiB: "
            + ", ".join(f"{part} {size / 2**20:.1f} MiB" for part, size in parts.items())
        )
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "deployment-sizes.json").write_text(json.dumps(sizes, indent=2) + "\n")
    for name, size in sizes.items():
        assert size["total_bytes"] < LAMBDA_UNZIPPED_LIMIT, f"{name} is too large: {size}"


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_built_layers_have_the_right_contents(sam_build: Path) -> None:
    dependencies = sam_build / "DependenciesLayer" / "python"
    for package in (
        "onnxruntime",
        "numpy",
        "PIL",
        "psycopg",
        "psycopg_binary",
        "pgvector",
        "aws_lambda_powertools",
    ):
        assert (dependencies / package).is_dir(), f"{package} missing from the dependencies layer"
    # Built for Lambda's arm64 (ELF machine 183 = AArch64), whatever machine ran the build.
    (ort_extension,) = (dependencies / "onnxruntime" / "capi").glob("onnxruntime_pybind11_state*.so")
    assert _elf_machine(ort_extension) == 183, ort_extension
    assert "cpython-312" in ort_extension.name
    # Trimmed, but with CPython 3.12 bytecode.
    assert not list(dependencies.rglob("tests")), "test suites should be trimmed"
    for tool in ("transformers", "quantization", "tools"):
        assert not (dependencies / "onnxruntime" / tool).exists()
    assert list((dependencies / "numpy" / "__pycache__").glob("__init__.cpython-312.pyc"))

    shared = sam_build / "SharedLayer" / "python"
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == ["lookalike", "lookalike_aws"]
    assert (shared / "lookalike" / "store" / "sql").is_dir()  # the migrations

    model = sam_build / "ModelLayer" / "model"
    card = json.loads((model / "model_card.json").read_text())
    for name in _model_files(card):
        assert (model / name).is_file(), f"model layer lacks {name}"

    # /opt/certs/rds-ca-bundle.pem, the DB_SSLROOTCERT default: RDS CAs (when downloaded) and
    # the Amazon Trust Services roots RDS Proxy's certificates chain to.
    certificates = sam_build / "CertificatesLayer"
    assert sorted(p.relative_to(certificates).as_posix() for p in certificates.rglob("*")) == [
        "certs",
        "certs/rds-ca-bundle.pem",
    ]
    bundle = (certificates / "certs" / "rds-ca-bundle.pem").read_text()
    expected = 4 + (
        RDS_CA_BUNDLE.read_text().count("-----BEGIN CERTIFICATE-----") if RDS_CA_BUNDLE.is_file() else 0
    )
    assert bundle.count("-----BEGIN CERTIFICATE-----") == expected


def _model_files(card: dict[str, Any]) -> list[str]:
    """File names the model card refers to (any string value ending in .onnx / .json)."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and re.fullmatch(r"[\w.-]+\.(onnx|json)", node):
            names.append(node)

    walk(card)
    assert any(name.endswith(".onnx") for name in names), card
    return names


# --- the layer is complete: an x86_64 build imports the handlers and embeds a photo -------------


@pytest.fixture(scope="module")
def x86_dependencies_layer(sam_build: Path) -> Path:
    """The dependencies layer built by its own Makefile for manylinux x86_64 (this machine), the
    same requirements and trimming as the arm64 one; rebuilt only when those inputs change."""
    makefile = REPO_ROOT / "layers/dependencies/Makefile"
    requirements = REPO_ROOT / "layers/dependencies/requirements.txt"
    digest = hashlib.sha256(makefile.read_bytes() + requirements.read_bytes()).hexdigest()
    stamp = X86_DIR / "DependenciesLayer.sha256"
    target = X86_DIR / "DependenciesLayer"
    if not (stamp.is_file() and stamp.read_text() == digest and (target / "python").is_dir()):
        _run(
            [
                "make",
                "-f",
                str(makefile),
                "build-DependenciesLayer",
                f"ARTIFACTS_DIR={target}",
                "ARCH=x86_64",
                f"PYTHON={SAM_PYTHON}",
            ]
        )
        stamp.write_text(digest)
    return target / "python"


# Runs in `python3.12 -I -S`: no site-packages, no PYTHON* variables, only the layers on the path,
# in Lambda's order (/opt/python), and the handlers loaded from their files as Lambda does.
_CLEAN_INTERPRETER_SCRIPT = r"""
import importlib.util, json, os, sys
layers = sys.argv[1].split(os.pathsep)
sys.path[:0] = layers
from PIL import Image
import numpy, onnxruntime, psycopg, pgvector.psycopg, boto3, aws_lambda_powertools
from aws_lambda_powertools import Logger, Metrics, Tracer  # Tracer needs aws-xray-sdk
from lookalike.model.embedder import get_embedder
assert psycopg.pq.__impl__ == "binary", psycopg.pq.__impl__
handlers = {}
for name, path in json.loads(sys.argv[3]).items():
    spec = importlib.util.spec_from_file_location(name + "_app", path)
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)  # Lambda puts the function's folder first: its sibling modules
    spec.loader.exec_module(module)  # the ingest handler builds the ONNX session at import
    sys.path.remove(folder)
    handlers[name] = callable(getattr(module, "lambda_handler", None))
with Image.open(sys.argv[2]) as image:
    embedding = get_embedder().embed([image.convert("RGB")]).vectors
allowed = [os.path.dirname(os.__file__), *layers]
allowed += [os.path.dirname(path) for path in json.loads(sys.argv[3]).values()]
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not any(module.__file__.startswith(prefix) for prefix in allowed)
)
print(json.dumps({
    "embedding": embedding[0].tolist(), "shape": list(embedding.shape), "handlers": handlers,
    "model_version": get_embedder().model_version, "outside_layers": outside,
    "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
}))
"""


def test_x86_64_build_of_the_layers_imports_the_handlers_and_embeds(
    x86_dependencies_layer: Path,
    sam_build: Path,
    photos: list[SamplePhoto],
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    handlers = {
        name: str(REPO_ROOT / "functions" / name / "app.py")
        for name in ("ingest", "query", "migrate")
        if (REPO_ROOT / "functions" / name / "app.py").is_file()
    }
    layers = [str(x86_dependencies_layer), str(sam_build / "SharedLayer" / "python")]
    photo = photos[0]
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "MODEL_DIR": str(sam_build / "ModelLayer" / "model"),
        "INFERENCE_THREADS": "1",
        # What Lambda sets; the clients are created at import, nothing is called.
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Lookalike",
    }
    result = subprocess.run(
        [
            str(SAM_PYTHON),
            "-I",
            "-S",
            "-c",
            _CLEAN_INTERPRETER_SCRIPT,
            os.pathsep.join(layers),
            str(photo.path),
            json.dumps(handlers),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["outside_layers"] == [], found["outside_layers"]
    assert all(found["handlers"].values()), found["handlers"]
    assert found["shape"] == [1, 1280]
    # The same photo embedded by the development environment: the layer computes the same thing.
    expected = get_embedder().embed([photo.open_rgb()]).vectors[0]
    cosine = float(np.dot(np.asarray(found["embedding"], dtype=np.float32), expected))
    assert found["model_version"] == get_embedder().model_version
    assert cosine > 0.9999, cosine
    report(
        f"x86_64 layer: imported {sorted(handlers)} handlers and embedded {photo.name} in a clean "
        f"interpreter (onnxruntime {found['onnxruntime']}, numpy {found['numpy']}, cosine {cosine:.6f})"
    )


# --- the template's wiring agrees with the handlers and the settings ---------------------------


def test_ingest_queue_and_trigger_settings(template: dict[str, Any]) -> None:
    functions = _resources(template, "AWS::Serverless::Function")
    queues = _resources(template, "AWS::SQS::Queue")
    event = _sqs_event(template)
    queue = queues[_logical_id(event["Queue"])]
    timeout = int(functions["IngestFunction"]["Timeout"])
    assert int(queue["VisibilityTimeout"]) >= 6 * timeout, (
        "visibility timeout must be >= 6x the function timeout"
    )
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    batch_size = int(event.get("BatchSize", 10))
    window = float(event.get("MaximumBatchingWindowInSeconds", 0))
    assert batch_size <= 10 or window > 0, "BatchSize > 10 needs a batching window"
    assert window > 0, "a batching window gathers uploads into one ONNX call"
    concurrency = event["ScalingConfig"]["MaximumConcurrency"]
    assert isinstance(concurrency, dict), "MaximumConcurrency should be a parameter"
    parameter = template["Parameters"][concurrency["Ref"]]
    assert int(parameter["Default"]) >= 2  # AWS's minimum
    assert int(parameter["MinValue"]) >= 2
    redrive = queue["RedrivePolicy"]
    assert _logical_id(redrive["deadLetterTargetArn"]) in queues
    assert int(_parameter_default(template, redrive["maxReceiveCount"])) >= 1


def test_bucket_notifies_the_ingest_queue_of_creates_and_deletes(template: dict[str, Any]) -> None:
    (bucket,) = _resources(template, "AWS::S3::Bucket").values()
    configurations = bucket["NotificationConfiguration"]["QueueConfigurations"]
    queue_id = _logical_id(_sqs_event(template)["Queue"])
    events = {configuration["Event"] for configuration in configurations}
    assert {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"} <= events
    for configuration in configurations:
        assert _logical_id(configuration["Queue"]) == queue_id
        assert "KeyPrefix" in json.dumps(configuration.get("Filter")), "notifications filter on KeyPrefix"
    assert template["Parameters"]["KeyPrefix"]["Default"] == "products/"


def test_ingest_handler_reports_partial_batch_failures() -> None:
    """The trigger's ReportBatchItemFailures only works if the handler answers batchItemFailures."""
    source = (REPO_ROOT / "functions/ingest/app.py").read_text()
    assert "process_partial_response" in source or "batchItemFailures" in source


def _handler_defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False


def test_every_function_handler_exists(template: dict[str, Any]) -> None:
    globals_ = template.get("Globals", {}).get("Function", {})
    for name, function in _resources(template, "AWS::Serverless::Function").items():
        module, _, attribute = (function.get("Handler") or globals_["Handler"]).rpartition(".")
        path = TEMPLATE.parent / function["CodeUri"] / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{name}: {path} does not exist (yet?)"
        assert _handler_defines(path, attribute), f"{name}: {path} defines no {attribute}"
        assert function.get("Runtime", globals_.get("Runtime")) == "python3.12"
        assert function.get("Architectures", globals_.get("Architectures")) == ["arm64"]
        assert sorted(_function_layers(template, function)) == [
            "CertificatesLayer",
            "DependenciesLayer",
            "ModelLayer",
            "SharedLayer",
        ]


def _environment(template: dict[str, Any], function: str) -> dict[str, Any]:
    globals_ = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = (
        _resources(template, "AWS::Serverless::Function")[function]
        .get("Environment", {})
        .get("Variables", {})
    )
    return {**globals_, **own}


def _variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    patterns = [
        r"_(?:get|int|choice)\(\s*env,\s*\"([A-Z][A-Z0-9_]+)\"",
        r"env\.get\(\s*\"([A-Z][A-Z0-9_]+)\"",
        r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]+)\"",
        r"os\.environ\[\s*\"([A-Z][A-Z0-9_]+)\"\]",
    ]
    for path in SETTINGS_SOURCES + sorted((REPO_ROOT / "functions").glob("*/app.py")):
        source = path.read_text()
        for pattern in patterns:
            names.update(re.findall(pattern, source))
    for path in SETTINGS_SOURCES:  # names kept in constants, e.g. SECRET_ARN_VARIABLE = "..."
        names.update(re.findall(r"_VARIABLE = \"([A-Z][A-Z0-9_]+)\"", path.read_text()))
    return names


# Variables that only some functions' code paths read (the migration never touches the bucket).
ONLY_FOR = {"BUCKET_NAME": {"IngestFunction", "QueryFunction"}}


def test_template_sets_the_variables_the_code_reads(template: dict[str, Any]) -> None:
    read = _variables_read_by_the_code()
    assert {"MODEL_DIR", "DB_PREPARE_THRESHOLD", "KEY_PREFIX"} <= read, read  # the scan works
    for function in ("IngestFunction", "QueryFunction", "MigrationFunction"):
        environment = _environment(template, function)
        missing = sorted(
            name
            for name in read - set(NOT_IN_TEMPLATE)
            if name not in environment
            and not name.startswith(LAMBDA_RESERVED_PREFIXES)
            and function in ONLY_FOR.get(name, {function})
        )
        assert missing == [], f"{function} does not set {missing}"
        assert environment["MODEL_DIR"] == "/opt/model"
        assert "DATABASE_SECRET_ARN" in environment
        assert "POWERTOOLS_SERVICE_NAME" in environment
        assert "POWERTOOLS_METRICS_NAMESPACE" in environment
        assert "LOG_LEVEL" in environment
    # Behind RDS Proxy: no server-side prepared statements.
    threshold = _environment(template, "IngestFunction")["DB_PREPARE_THRESHOLD"]
    assert threshold["Fn::If"][1] == "none", threshold


def _query_handler_routes() -> set[tuple[str, str]]:
    """Routes the query handler declares (Powertools resolver decorators), API Gateway syntax."""
    path = REPO_ROOT / "functions/query/app.py"
    source = path.read_text()
    routes = set()
    for method, route in re.findall(r"@\w+\.(get|post|put|delete|patch)\(\s*\"([^\"]+)\"", source):
        routes.add((method.upper(), re.sub(r"<(\w+)>", r"{\1}", route)))
    return routes


def test_http_routes_agree_with_the_query_handler_and_are_authorized(template: dict[str, Any]) -> None:
    functions = _resources(template, "AWS::Serverless::Function")
    events = functions["QueryFunction"]["Events"].values()
    template_routes = {(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events}
    api = _resources(template, "AWS::Serverless::HttpApi")["QueryApi"]
    paths = api["DefinitionBody"]["paths"]
    # Every route has its security (IAM or JWT by condition) in the OpenAPI body, and no other.
    secured = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert secured == template_routes
    for item in paths.values():
        for operation in item.values():
            choice = operation["security"]["Fn::If"]
            assert choice[0] == "UseJwt"
            assert choice[2] == [{"AWS_IAM": []}]
    handler = REPO_ROOT / "functions/query/app.py"
    assert handler.is_file(), "functions/query/app.py does not exist (yet?)"
    declared = _query_handler_routes()
    assert declared, "no routes found in functions/query/app.py"
    assert declared <= template_routes, (
        f"routes the API does not expose: {sorted(declared - template_routes)}"
    )
