"""Fault-injection tests need a stack they control: their own local Kafka + Redis (Redis
with an append-only file, so restarting it keeps its data, as a production Redis would)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from streamproc.dev.stack import LocalStack, StackInfo


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackInfo]]:
    stack = LocalStack(tmp_path_factory.mktemp("fault-stack"), persistent_redis=True)
    info = stack.up(lambda message: print(message, file=sys.stderr))
    try:
        yield stack, info
    finally:
        stack.down()
