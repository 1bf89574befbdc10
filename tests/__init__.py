"""
What the test suites share, in one place: `tests.factories` (model
factories and ready-made rows) and `tests.helpers` (waiting on conditions,
threads released together, child processes, ports). Fixtures are in the
top-level conftest.py; test modules import from here, never from each other.
"""
