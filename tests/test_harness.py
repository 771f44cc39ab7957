"""The test harness itself (tests/conftest.py): importing it has no side effects, the slow list names
real tests, and user factories return named objects."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.conftest import FOLDER_MARKS, ROOT, SLOW


def test_importing_the_conftest_changes_nothing():
    """Redis, the data dir and the environment are set up by pytest_configure, not at import."""
    script = (
        "import os, tempfile; before = dict(os.environ); temp = set(os.listdir(tempfile.gettempdir()));"
        "import tests.conftest as c; assert dict(os.environ) == before, 'environment changed';"
        "assert c._harness is None; assert set(os.listdir(tempfile.gettempdir())) <= temp, 'temp dir made'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_slow_entry_names_a_real_test_module_or_test():
    for entry in SLOW:
        path, _, test = entry.partition("::")
        module = ROOT / path
        assert module.is_file(), f"SLOW names a missing module: {entry}"
        if test:
            names = {node.name for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.FunctionDef)}
            assert test in names, f"SLOW names a missing test: {entry}"
    for folder in FOLDER_MARKS:
        assert (ROOT / folder).is_dir()


def test_collected_tests_carry_the_marks_of_their_folder_or_the_slow_list(request):
    assert not {mark.name for mark in request.node.iter_markers()} & {"e2e", "reliability", "slow"}
    for item in request.session.items:  # what this run collected and kept
        marks = {mark.name for mark in item.iter_markers()}
        path = item.nodeid.split("::", 1)[0]
        assert ("slow" in marks) == (path in SLOW or item.nodeid.split("[", 1)[0] in SLOW), item.nodeid
        for folder, mark in FOLDER_MARKS.items():
            assert (mark in marks) == path.startswith(folder + "/"), item.nodeid


def test_make_user_returns_a_named_user_that_still_unpacks(make_user):
    user = make_user("named")
    user_id, email, password, token = user
    assert (user.id, user.email, user.password, user.token) == (user_id, email, password, token)
    assert user.email.startswith("named") and user.token
