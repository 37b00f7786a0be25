"""Pinned outputs of a broad set of commands (tests/golden/cases.py): a refactoring must leave
every byte of them unchanged. An intended change of output: `python -m tests.golden.update`."""

from __future__ import annotations

import json

import pytest

from .cases import CASES, EXPECTED, digest, run_all

pytest.importorskip("numba")  # the fast replay cases must take the array path


@pytest.fixture(scope="module")
def outputs():
    return run_all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_unchanged(outputs, name):
    expected = json.loads(EXPECTED.read_text())
    assert name in expected, "new case: run python -m tests.golden.update"
    assert digest(outputs[name]) == expected[name], (
        f"{name}: output changed; python -m tests.golden.update --dump DIR to see it")


def test_every_expected_case_exists():
    assert sorted(json.loads(EXPECTED.read_text())) == sorted(CASES)
