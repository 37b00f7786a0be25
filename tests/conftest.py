"""Shared test configuration: Hypothesis profiles and in-process CLI runs."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings

# Default: deterministic (same examples every run) and quick enough for `make test`.
settings.register_profile("default", max_examples=300, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# `make stress`: many more random examples.
settings.register_profile("stress", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# `make fuzz`: fresh random examples every run (tests/test_fuzz.py scales their number).
settings.register_profile("fuzz", derandomize=False, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


@dataclass
class CliResult:
    status: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def run_cli():
    """Run ``rseqlab ARGS...`` in-process; returns status, stdout and stderr."""
    from rseqlab.cli import main

    def run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(list(args))
        return CliResult(int(status), out.getvalue(), err.getvalue())

    return run
