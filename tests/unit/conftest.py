"""Unit-test fixtures: ``ex`` is an exchange whose engine invariants are checked per command."""

from __future__ import annotations

import pytest

from tests.unit.support import CheckedExchange


@pytest.fixture
def ex() -> CheckedExchange:
    return CheckedExchange()
