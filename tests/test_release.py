"""Release files: one version everywhere, one license, one list of Pythons, CI that forks can run."""

from __future__ import annotations

import datetime
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

from bot import __version__
from tests.conftest import ROOT, run_cli

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
README = (ROOT / "README.md").read_text()
WORKFLOW_PATH = ROOT / ".github" / "workflows" / "ci.yml"
REINSTALL = "the installed metadata is stale: run .venv/bin/pip install -e '.[test]'"

RELEASE_HEADING = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$")
CHANGE_TYPES = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _yaml(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _workflow_triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the key `on` as True; GitHub reads it as the string.
    return workflow.get("on", workflow.get(True)) or {}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Each instruction of the Dockerfile as (NAME, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, arguments = line.strip().partition(" ")
            instructions.append((name.upper(), arguments))
    return instructions


def _dockerfile_pairs(instruction: str) -> dict[str, str]:
    """The key=value pairs of every ARG or LABEL instruction, quotes removed."""
    pairs: dict[str, str] = {}
    for name, arguments in _dockerfile_instructions():
        if name == instruction:
            for word in shlex.split(arguments):
                key, _, value = word.partition("=")
                pairs[key] = value
    return pairs


def _minor_versions_in_classifiers() -> list[str]:
    prefix = "Programming Language :: Python :: "
    return [
        c.removeprefix(prefix)
        for c in PYPROJECT["project"]["classifiers"]
        if c.startswith(prefix) and re.fullmatch(r"3\.\d+", c.removeprefix(prefix))
    ]


def _marked_command(text: str, marker: str) -> str:
    """The first line of the code block after <!-- marker -->, as .ci/run reads the README."""
    match = re.search(rf"^<!-- {marker} -->\n```bash\n(.*)\n", text, re.MULTILINE)
    assert match, f"no {marker} block"
    return match.group(1)


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompletedProcess[str]]:
    """What `python -m bot --version` and `python -m bot check` print, each with no settings."""
    return {
        command: run_cli(command, cwd=tmp_path_factory.mktemp(command.strip("-")))
        for command in ("--version", "check")
    }


# --- one version -----------------------------------------------------------------------------


def test_version_flag_prints_the_release_and_exits_0_without_any_settings(
    printed: dict[str, CompletedProcess[str]],
) -> None:
    result = printed["--version"]
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stablehand {__version__}\n"
    assert result.stderr == ""


def test_check_names_the_release_on_its_first_line(
    printed: dict[str, CompletedProcess[str]],
) -> None:
    assert printed["check"].stdout.splitlines()[0] == f"Stablehand {__version__}"


def test_the_version_printed_released_installed_and_labelled_is_one_version(
    printed: dict[str, CompletedProcess[str]],
) -> None:
    newest_release = next(
        m.group(1) for line in CHANGELOG.splitlines() if (m := RELEASE_HEADING.match(line))
    )
    stated = {
        "bot.__version__": __version__,
        "--version": printed["--version"].stdout.split()[-1],
        "check": printed["check"].stdout.splitlines()[0].split()[-1],
        "CHANGELOG.md newest release": newest_release,
        "Dockerfile ARG VERSION": _dockerfile_pairs("ARG")["VERSION"],
        "package metadata": metadata.version("stablehand"),
    }
    assert len(set(stated.values())) == 1, f"{stated} ({REINSTALL} if only metadata differs)"
    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bot.__version__"}


def test_the_changelog_keeps_the_keep_a_changelog_form() -> None:
    headings = [line for line in CHANGELOG.splitlines() if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]", "unreleased changes go in a section at the top"
    releases = [RELEASE_HEADING.match(heading) for heading in headings[1:]]
    assert all(releases), [h for h, m in zip(headings[1:], releases, strict=True) if not m]
    versions = [tuple(map(int, m.group(1).split("."))) for m in releases if m]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    for m in releases:
        assert m and datetime.date.fromisoformat(m.group(2))
    kinds = {line[4:] for line in CHANGELOG.splitlines() if line.startswith("### ")}
    assert kinds <= CHANGE_TYPES, kinds - CHANGE_TYPES
    source = PYPROJECT["project"]["urls"]["Source"]
    for heading in headings:
        label = heading[4 : heading.index("]")].lower()
        assert re.search(rf"^\[{re.escape(label)}\]: {re.escape(source)}/", CHANGELOG, re.M), label


# --- one list of supported Pythons -----------------------------------------------------------


def test_ci_readme_and_classifiers_name_the_same_pythons_from_the_required_floor() -> None:
    matrix = _yaml(WORKFLOW_PATH)["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    # Unquoted, YAML reads 3.10 as the float 3.1: every entry must be a string.
    assert all(isinstance(v, str) for v in matrix), matrix
    readme_line = re.search(r"\*\*Python:\*\* ([\d., ]+?) ·", README)
    assert readme_line, "the README's top line names the supported Pythons"
    readme = [v.strip() for v in readme_line.group(1).split(",")]
    classifiers = _minor_versions_in_classifiers()
    assert matrix == classifiers == readme, {
        "ci": matrix,
        "pyproject": classifiers,
        "README": readme,
    }
    floor = re.fullmatch(r">=(3\.\d+)", PYPROJECT["project"]["requires-python"])
    assert floor and floor.group(1) == matrix[0]
    assert f"Python {floor.group(1)} or newer" in README


def test_the_workflow_runs_ci_run_on_every_push_and_pull_request_on_each_python() -> None:
    workflow = _yaml(WORKFLOW_PATH)
    assert {"push", "pull_request"} <= set(_workflow_triggers(workflow))
    steps = workflow["jobs"]["test"]["steps"]
    uses = [step.get("uses", "").partition("@")[0] for step in steps]
    assert uses[:2] == ["actions/checkout", "actions/setup-python"]
    assert steps[1]["with"]["python-version"] == "${{ matrix.python-version }}"
    assert steps[-1]["run"] == "bash .ci/run"
    assert (ROOT / ".ci" / "run").is_file()


# --- one license -----------------------------------------------------------------------------


def test_the_license_is_mit_in_the_file_the_package_and_the_image() -> None:
    lines = (ROOT / "LICENSE").read_text().splitlines()
    assert lines[0] == "MIT License"
    assert lines[2] == "Copyright (c) 2026 The Stablehand contributors"
    assert "Permission is hereby granted, free of charge" in lines[4]
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert metadata.metadata("stablehand")["License-Expression"] == "MIT", REINSTALL
    assert _dockerfile_pairs("LABEL")["org.opencontainers.image.licenses"] == "MIT"
    assert "**License:** [MIT](LICENSE)" in README


# --- the image -------------------------------------------------------------------------------


def test_the_images_labels_come_from_the_package() -> None:
    labels = _dockerfile_pairs("LABEL")
    arguments = _dockerfile_pairs("ARG")
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert arguments["VERSION"] == __version__
    assert labels["org.opencontainers.image.source"] == "${SOURCE_URL}"
    assert arguments["SOURCE_URL"] == PYPROJECT["project"]["urls"]["Source"]
    assert labels["org.opencontainers.image.description"] == PYPROJECT["project"]["description"]
    assert labels["org.opencontainers.image.title"] == "Stablehand"


def test_the_image_build_copies_the_readme_and_license_the_package_build_reads() -> None:
    # Without LICENSE in the build context, setuptools builds a wheel without it, silently.
    copied = {
        source
        for name, arguments in _dockerfile_instructions()
        if name == "COPY"
        for source in arguments.split()[:-1]
    }
    needed = {PYPROJECT["project"]["readme"], *PYPROJECT["project"]["license-files"]}
    assert needed <= copied, needed - copied


# --- for contributors ------------------------------------------------------------------------


def test_contributing_quotes_the_readmes_set_up_commands_exactly() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for marker in ("run-command", "test-command"):
        assert _marked_command(contributing, marker) == _marked_command(README, marker)


def test_a_bug_report_asks_for_the_version_the_check_output_and_the_steps() -> None:
    templates = ROOT / ".github" / "ISSUE_TEMPLATE"
    bug = _yaml(templates / "bug_report.yml")
    required = {
        field["id"] for field in bug["body"] if field.get("validations", {}).get("required")
    }
    assert {"version", "check", "steps", "expected", "actual"} <= required
    assert "masked" in yaml.safe_dump(bug)
    assert _yaml(templates / "feature_request.yml")["body"]
    pull_request = (ROOT / ".github" / "pull_request_template.md").read_text()
    assert "CHANGELOG.md" in pull_request and "ruff" in pull_request
