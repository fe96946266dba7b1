"""The package's face: ``rvsl.__version__``, ``python -m rvsl`` and the installed commands."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import rvsl
from rvsl.__main__ import commands, main

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
COMMANDS = ["rvsl-convert", "rvsl-data", "rvsl-eval", "rvsl-export", "rvsl-search", "rvsl-train"]


def test_version_is_the_installed_distributions():
    assert rvsl.__version__ == version("rvsl")
    assert rvsl.__version__ == tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_every_subpackage_is_listed_for_installation():
    source = PYPROJECT.parent / "src"
    found = {
        ".".join(init.parent.relative_to(source).parts) for init in source.rglob("__init__.py")
    }
    listed = set(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"])
    assert found - listed == set()


def test_python_dash_m_rvsl_help_lists_every_command():
    done = subprocess.run(
        [sys.executable, "-m", "rvsl", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"rvsl {rvsl.__version__}")
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  rvsl-")]
    assert listed == COMMANDS
    for line in done.stdout.splitlines():
        if line.startswith("  rvsl-"):
            assert len(line.split(maxsplit=1)) == 2, f"no description: {line!r}"


def test_the_installed_commands_are_pyprojects():
    """The metadata ``python -m rvsl`` reads is what pyproject.toml declares (a stale install
    of an older pyproject fails here: re-run make install)."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert {name: entry.value for name, entry in commands().items()} == scripts


def test_python_dash_m_rvsl_runs_a_command_by_either_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["rvsl"])  # main() replaces it for the command
    for name in ("rvsl-convert", "convert"):
        with pytest.raises(SystemExit) as done:  # argparse's --help exits 0
            main([name, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith("usage: rvsl-convert")


def test_an_unknown_command_is_one_line_and_exit_code_2(capsys):
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m rvsl: error: unknown command 'nope'")
    assert err.count("\n") == 1


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"rvsl {rvsl.__version__}\n"


def test_citation_and_licence_match_the_package():
    root = PYPROJECT.parent
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == project["version"]
    assert citation["license"] == project["license"] == "MIT"
    assert citation["preferred-citation"]["title"].startswith("RVSL: Robust Vehicle Similarity")
    assert (root / "LICENSE").read_text().startswith("MIT License")
    assert "[Unreleased]" in (root / "CHANGELOG.md").read_text()
