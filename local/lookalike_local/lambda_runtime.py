"""Runs a Lambda handler in this process: loaded from its file, called with a Lambda-like context.

Both handlers live in files named `app.py`; each is loaded under its own module name so they
do not replace each other in sys.modules. The handler's environment must be set before it is
loaded (handlers build their clients and warm the model at import, as in a cold start).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lookalike_local.template import LOCAL_ACCOUNT, LOCAL_REGION

Handler = Callable[[dict[str, Any], Any], Any]

# One process stands in for two functions that share process-wide singletons (the store's
# connection, the embedder, Powertools' resolver and logger state). Lambda never calls one
# execution environment concurrently; this lock keeps that promise for both handlers together.
_INVOKE_LOCK = threading.Lock()


@dataclass(slots=True)
class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def load_module(handler_file: Path, module_name: str) -> ModuleType:
    """Import a function's `app.py` as `module_name` (its init phase runs: a cold start)."""
    spec = importlib.util.spec_from_file_location(module_name, handler_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {handler_file}")
    module = importlib.util.module_from_spec(spec)
    # Lambda puts the function's folder first on sys.path: sibling modules import as in AWS.
    sys.path.insert(0, str(handler_file.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(handler_file.parent))
    return module


def load_handler(handler_file: Path, module_name: str, attribute: str = "lambda_handler") -> Handler:
    """Import `handler_file` as `module_name` and return its handler function."""
    handler = getattr(load_module(handler_file, module_name), attribute)
    if not callable(handler):
        raise TypeError(f"{handler_file}: {attribute} is not callable")
    return handler  # type: ignore[no-any-return]


class LocalFunction:
    """A loaded handler plus what Lambda knows about it (name, memory, timeout)."""

    def __init__(self, name: str, handler: Handler, *, memory_mb: int, timeout_s: float) -> None:
        self.name = name
        self.handler = handler
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.invocations = 0

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler synchronously, one event at a time (as one execution environment)."""
        context = LambdaContext(self.name, self.memory_mb, self.timeout_s)
        with _INVOKE_LOCK:
            self.invocations += 1
            return self.handler(event, context)

    @staticmethod
    def exclusive() -> threading.Lock:
        """The lock handlers run under; local tooling that uses the same singletons takes it too."""
        return _INVOKE_LOCK
