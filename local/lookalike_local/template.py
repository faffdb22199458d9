"""What the local stack copies from the SAM template, so that local runs and AWS cannot drift.

The local stack builds the same wiring as `template.yaml`: the bucket's S3 -> SQS notification
(events and key filter), the ingest queue (visibility timeout, redrive to the dead-letter queue
after maxReceiveCount receives), the SQS trigger of the ingest function (BatchSize,
MaximumBatchingWindowInSeconds, ReportBatchItemFailures), the functions' handlers, timeouts,
memory and plain environment variables, and the HTTP API routes of the query function.

Each value is read from the template when it is there; where the template is missing (or does
not say), the documented defaults below apply and `Topology.defaults_used` names them, so the
demo can print what it could not read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Local names (the template's names are CloudFormation expressions of the stack name).
LOCAL_BUCKET = "lookalike-photos"
LOCAL_QUEUE = "lookalike-ingest"
LOCAL_DLQ = "lookalike-ingest-dlq"
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"  # moto's default account

# What AWS uses when a declared queue or SQS trigger leaves a setting out.
_AWS_DEFAULTS = {"VisibilityTimeout": 30.0, "BatchSize": 10.0, "MaximumBatchingWindowInSeconds": 0.0}
# Values AWS fills in or that only make sense in Lambda (the model layer, the database secret, RDS's
# CA bundle): never copied into the local environment.
_NOT_COPIED_ENV = {
    "MODEL_DIR",
    "DATABASE_URL",
    "DATABASE_SECRET_ARN",
    "AWS_ENDPOINT_URL",
    "PYTHONPATH",
    "DB_SSLMODE",
    "DB_SSLROOTCERT",
}


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One Lambda function as the template declares it (handler file, limits, environment)."""

    logical_id: str
    code_dir: Path
    handler_module: str  # "app" for Handler: app.lambda_handler
    handler_name: str  # "lambda_handler"
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]

    @property
    def handler_file(self) -> Path:
        return self.code_dir / (self.handler_module.replace(".", "/") + ".py")


@dataclass(frozen=True, slots=True)
class HttpRoute:
    method: str  # "GET", "POST", ... or "ANY"
    path: str  # "/products/{id}/similar", "$default" for the catch-all route

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class NotificationRule:
    """One QueueConfiguration of the bucket: an event type and its key filter."""

    event: str
    prefix: str | None = None
    suffix: str | None = None


_DEFAULT_NOTIFICATIONS = (
    NotificationRule("s3:ObjectCreated:*", prefix="products/"),
    NotificationRule("s3:ObjectRemoved:*", prefix="products/"),
)


@dataclass(frozen=True, slots=True)
class Topology:
    bucket: str = LOCAL_BUCKET
    queue: str = LOCAL_QUEUE
    dlq: str = LOCAL_DLQ
    # S3 -> SQS notification
    notifications: tuple[NotificationRule, ...] = _DEFAULT_NOTIFICATIONS
    # Ingest queue and its SQS trigger
    visibility_timeout_s: int = 180
    max_receive_count: int = 5
    batch_size: int = 10
    batching_window_s: float = 1.0
    report_batch_item_failures: bool = True
    ingest: FunctionSpec | None = None
    query: FunctionSpec | None = None
    routes: tuple[HttpRoute, ...] = ()
    # The bucket's CORS rules (browsers POST large search photos to it), as S3's API takes them.
    cors_rules: tuple[dict[str, Any], ...] = ()
    source: Path | None = None  # the template read, None when it did not exist
    defaults_used: tuple[str, ...] = field(default=())


class _Resolver:
    """Resolves the few intrinsic functions whose value is known locally (parameters' defaults,
    the bucket and queues' local names and ARNs); everything else resolves to None."""

    def __init__(self, template: dict[str, Any], names: dict[str, tuple[str, str]]) -> None:
        self.parameters: dict[str, Any] = template.get("Parameters") or {}
        self.names = names  # logical id -> (Ref value, Arn)

    def value(self, node: Any) -> Any:
        if isinstance(node, str | int | float | bool) or node is None:
            return node
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                return self._ref(str(argument))
            if key == "Fn::GetAtt":
                parts = argument.split(".", 1) if isinstance(argument, str) else list(argument)
                if len(parts) == 2 and parts[1] == "Arn" and parts[0] in self.names:
                    return self.names[parts[0]][1]
                return None
            if key == "Fn::Sub" and isinstance(argument, str):
                return None if "${" in argument else argument
            if key.startswith("Fn::"):
                return None
        if isinstance(node, dict):
            return {key: self.value(item) for key, item in node.items()}
        return None

    def _ref(self, name: str) -> Any:
        if name in self.names:
            return self.names[name][0]
        if name == "AWS::Region":
            return LOCAL_REGION
        if name == "AWS::AccountId":
            return LOCAL_ACCOUNT
        parameter = self.parameters.get(name)
        if isinstance(parameter, dict):
            return parameter.get("Default")
        return None

    def logical_id(self, node: Any) -> str | None:
        """The logical id a Ref/GetAtt points at."""
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref" and isinstance(argument, str):
                return argument
            if key == "Fn::GetAtt":
                return str(argument.split(".", 1)[0] if isinstance(argument, str) else argument[0])
        return None


def _load_yaml(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation template, turning short-form tags (!Ref, !GetAtt, !Sub, ...) into
    their long form so that one resolver handles both spellings."""
    yaml: Any = importlib.import_module("yaml")  # PyYAML has no stubs in the dev environment

    class CloudFormationLoader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def construct(loader: Any, tag_suffix: str, node: Any) -> dict[str, Any]:
        name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CloudFormationLoader.add_multi_constructor("!", construct)
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=CloudFormationLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a CloudFormation template")
    return document


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource.get("Properties") or {}
        for logical_id, resource in resources.items()
        if isinstance(resource, dict) and resource.get("Type") == kind
    }


def _function_spec(
    template_dir: Path,
    logical_id: str,
    properties: dict[str, Any],
    globals_: dict[str, Any],
    resolver: _Resolver,
) -> FunctionSpec | None:
    merged = {**globals_, **properties}
    handler = merged.get("Handler")
    code_uri = merged.get("CodeUri")
    if not isinstance(handler, str) or not isinstance(code_uri, str) or "." not in handler:
        return None
    module, _, attribute = handler.rpartition(".")
    environment: dict[str, str] = {}
    for source in (globals_, properties):
        variables = ((source.get("Environment") or {}).get("Variables")) or {}
        for name, raw in variables.items():
            value = resolver.value(raw)
            if name not in _NOT_COPIED_ENV and isinstance(value, str | int | float | bool):
                environment[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return FunctionSpec(
        logical_id=logical_id,
        code_dir=(template_dir / code_uri).resolve(),
        handler_module=module,
        handler_name=attribute,
        timeout_s=int(merged.get("Timeout") or 3),
        memory_mb=int(merged.get("MemorySize") or 128),
        environment=environment,
    )


def load_topology(template_path: Path) -> Topology:
    """The local topology, read from the SAM template where it exists and says so."""
    if not template_path.is_file():
        return Topology(defaults_used=("everything (no template.yaml)",))
    template = _load_yaml(template_path)
    resources: dict[str, Any] = template.get("Resources") or {}
    queues = _of_type(resources, "AWS::SQS::Queue")
    buckets = _of_type(resources, "AWS::S3::Bucket")
    functions = _of_type(resources, "AWS::Serverless::Function")
    globals_ = dict(((template.get("Globals") or {}).get("Function")) or {})
    defaults = Topology()
    missing: list[str] = []

    # Which bucket notifies which queue: the bucket with a QueueConfiguration.
    notification: tuple[str, list[dict[str, Any]]] | None = None
    for bucket_id, properties in buckets.items():
        configurations = (properties.get("NotificationConfiguration") or {}).get("QueueConfigurations")
        if configurations:
            notification = (bucket_id, list(configurations))
            break
    # The ingest function: the one with an SQS event; the query function: the one with HttpApi events.
    ingest_id = query_id = None
    sqs_event: dict[str, Any] = {}
    http_events: list[dict[str, Any]] = []
    for function_id, properties in functions.items():
        declared = [event for event in (properties.get("Events") or {}).values() if isinstance(event, dict)]
        for event in declared:
            if event.get("Type") == "SQS" and ingest_id is None:
                ingest_id, sqs_event = function_id, event.get("Properties") or {}
            if event.get("Type") == "HttpApi":
                query_id = query_id or function_id
                if function_id == query_id:
                    http_events.append(event.get("Properties") or {})

    names: dict[str, tuple[str, str]] = {}
    bootstrap = _Resolver(template, names)
    queue_id = bootstrap.logical_id(sqs_event.get("Queue"))
    queue_properties = queues.get(queue_id or "", {})
    redrive = queue_properties.get("RedrivePolicy") or {}
    dlq_id = bootstrap.logical_id(redrive.get("deadLetterTargetArn"))
    for logical_id, name in ((queue_id, LOCAL_QUEUE), (dlq_id, LOCAL_DLQ)):
        if logical_id:
            url = f"http://sqs.{LOCAL_REGION}.localhost/{LOCAL_ACCOUNT}/{name}"
            names[logical_id] = (url, f"arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{name}")
    if notification is not None:
        names[notification[0]] = (LOCAL_BUCKET, f"arn:aws:s3:::{LOCAL_BUCKET}")
    else:
        for bucket_id in buckets:
            names[bucket_id] = (LOCAL_BUCKET, f"arn:aws:s3:::{LOCAL_BUCKET}")
    resolver = _Resolver(template, names)

    def number(properties: dict[str, Any], key: str, default: float, label: str) -> float:
        """The template's value; AWS's own default where a declared resource leaves it out."""
        value = resolver.value(properties.get(key))
        if isinstance(value, int | float | str) and str(value).replace(".", "", 1).isdigit():
            return float(value)
        if properties and key in _AWS_DEFAULTS:
            return _AWS_DEFAULTS[key]
        missing.append(label)
        return default

    notifications = defaults.notifications
    if notification is None:
        missing.append("bucket notification (events, key filter)")
    else:
        rules: list[NotificationRule] = []
        for configuration in notification[1]:
            filters = {
                str(rule.get("Name", "")).lower(): str(resolver.value(rule.get("Value")))
                for rule in ((configuration.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            }
            event_type = str(resolver.value(configuration.get("Event")))
            rules.append(NotificationRule(event_type, filters.get("prefix"), filters.get("suffix")))
        notifications = tuple(rules)
    cors_rules: list[dict[str, Any]] = []
    for properties in buckets.values():
        for rule in (properties.get("CorsConfiguration") or {}).get("CorsRules") or []:
            resolved = resolver.value(rule)
            if isinstance(resolved, dict):
                origins = resolved.get("AllowedOrigins")  # a CommaDelimitedList's default is one string
                if isinstance(origins, str):
                    resolved["AllowedOrigins"] = [origin.strip() for origin in origins.split(",")]
                if "MaxAge" in resolved:  # CloudFormation's name; S3's API says MaxAgeSeconds
                    resolved["MaxAgeSeconds"] = resolved.pop("MaxAge")
                cors_rules.append(resolved)
    if not queue_properties:
        missing.append("ingest queue")
    response_types = sqs_event.get("FunctionResponseTypes")
    if ingest_id is None:
        missing.append("ingest function SQS event")

    template_dir = template_path.parent
    ingest = query = None
    if ingest_id is not None:
        ingest = _function_spec(template_dir, ingest_id, functions[ingest_id], globals_, resolver)
    if query_id is not None:
        query = _function_spec(template_dir, query_id, functions[query_id], globals_, resolver)
    for label, spec in (("ingest function", ingest), ("query function", query)):
        if spec is None:
            missing.append(label)
    routes = tuple(
        HttpRoute(method=str(event.get("Method", "ANY")).upper(), path=str(event.get("Path", "$default")))
        for event in http_events
    )
    return Topology(
        notifications=notifications,
        visibility_timeout_s=int(
            number(queue_properties, "VisibilityTimeout", defaults.visibility_timeout_s, "VisibilityTimeout")
        ),
        max_receive_count=int(
            number(redrive, "maxReceiveCount", defaults.max_receive_count, "RedrivePolicy.maxReceiveCount")
        ),
        batch_size=int(number(sqs_event, "BatchSize", defaults.batch_size, "BatchSize")),
        batching_window_s=number(
            sqs_event,
            "MaximumBatchingWindowInSeconds",
            defaults.batching_window_s,
            "MaximumBatchingWindowInSeconds",
        ),
        report_batch_item_failures=(
            isinstance(response_types, list) and "ReportBatchItemFailures" in response_types
            if ingest_id is not None
            else defaults.report_batch_item_failures
        ),
        ingest=ingest,
        query=query,
        routes=routes,
        cors_rules=tuple(cors_rules),
        source=template_path,
        defaults_used=tuple(missing),
    )
