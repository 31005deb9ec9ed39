from __future__ import annotations

import pytest

from tests.stubs import Exchange


@pytest.fixture
def ex() -> Exchange:
    return Exchange()
