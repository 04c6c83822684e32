"""The pytest plugin of fiber-core (entry point ``pytest11``): the contract
suite's command-line options.

They live here rather than in the suite's conftest.py because pytest reads the
conftest files of ``--pyargs`` packages only after parsing the command line, so
``pytest --pyargs fiber_core.testing.contract --fiber-backend NAME`` would
reject the option.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fiber-backend", action="append", default=[],
        help="backend to run the contract suite against (repeatable; "
             "default: $FIBER_TEST_BACKEND or local)")
