"""The suite's own machinery: tests that share recipe runs (`conftest.RecipeRuns`) carry
one ``xdist_group`` and must run in one worker, or the runs are trained twice. pytest
9.2 with pytest-xdist 3.8 silently ignored the marks (pyproject.toml pins pytest below
9.2); this catches the next such pair."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_tests_of_one_xdist_group_run_in_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import os, pathlib, time
        import pytest

        def record(name):
            time.sleep(0.3)
            pathlib.Path(name).write_text(os.environ["PYTEST_XDIST_WORKER"])

        @pytest.mark.xdist_group("shared")
        def test_first(): record("first")

        @pytest.mark.xdist_group("shared")
        def test_second(): record("second")

        @pytest.mark.xdist_group("shared")
        def test_third(): record("third")

        def test_other(): record("other")
        """))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist",
                             "loadgroup", "-p", "no:cacheprovider", "-o", "addopts=",
                             "test_grouped.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    workers = {name: (tmp_path / name).read_text() for name in ("first", "second", "third")}
    assert len(set(workers.values())) == 1, workers
