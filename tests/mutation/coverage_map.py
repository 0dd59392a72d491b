"""Which test runs which line of the money modules, and how long each test takes.

Loaded into pytest as a plugin (`-p tests.mutation.coverage_map`) by the runner's map stage.
In-process lines are recorded under the test's node id (a coverage context per test). Lines a
terminal subprocess runs are recorded too: every Python process the tests start measures
itself (coverage's `process_startup`, switched on by COVERAGE_PROCESS_START) into a data
file named after the test that is running, so a line only an end-to-end test reaches is
still mapped to that test. A process killed with SIGKILL writes nothing: its lines count
only through the same test's other processes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import coverage
import pytest

ENV_OUT = "MUTATION_MAP_OUT"  # folder the map stage writes into
ENV_FILES = "MUTATION_MAP_FILES"  # os.pathsep-separated files (or patterns) to measure
ENV_SUB_DATA = "MUTATION_SUB_DATA"  # where a subprocess of the running test writes


class _MapPlugin:
    def __init__(self, out: Path, files: list[str]) -> None:
        self.out = out
        self.files = files
        self.results: dict[str, dict[str, object]] = {}
        self.index = 0
        (out / "sub").mkdir(parents=True, exist_ok=True)
        rc = out / "subprocess.coveragerc"
        rc.write_text("[run]\nparallel = True\nsigterm = True\n"
                      f"data_file = ${{{ENV_SUB_DATA}}}\n"
                      "include =\n" + "".join(f"    {f}\n" for f in files))
        os.environ["COVERAGE_PROCESS_START"] = str(rc)
        self.cov = coverage.Coverage(data_file=str(out / "inproc.coverage"), include=files,
                                     config_file=False)
        self.cov.start()
        self.ids: dict[str, str] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.index += 1
        tag = f"t{self.index}"
        self.ids[tag] = item.nodeid
        os.environ[ENV_SUB_DATA] = str(self.out / "sub" / tag)
        self.cov.switch_context(item.nodeid)
        started = time.monotonic()
        yield
        self.cov.switch_context("")
        self.results.setdefault(item.nodeid, {"outcome": "passed"})["seconds"] = \
            round(time.monotonic() - started, 3)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.results.setdefault(report.nodeid, {"outcome": "passed"})
        if report.failed:
            entry["outcome"] = "failed"
        elif report.skipped and entry["outcome"] != "failed":
            entry["outcome"] = "skipped"

    def pytest_sessionfinish(self) -> None:
        self.cov.stop()
        self.cov.save()
        (self.out / "tests.json").write_text(json.dumps(
            {"results": self.results, "subprocess_tags": self.ids}, indent=0))


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get(ENV_OUT)
    if out:
        files = os.environ[ENV_FILES].split(os.pathsep)
        config.pluginmanager.register(_MapPlugin(Path(out), files), "mutation-map")


def load(out: Path, root: Path) -> tuple[dict[str, dict[int, set[str]]],
                                         dict[str, dict[str, object]]]:
    """{file: {line: {node ids}}} and {node id: {"outcome", "seconds"}} from a map folder.

    Files are named relative to the repository; the measured copy lives at `root`."""
    meta = json.loads((out / "tests.json").read_text())
    lines: dict[str, dict[int, set[str]]] = {}

    def add(measured: str, line: int, node_ids: set[str]) -> None:
        path = Path(measured)
        if path.is_relative_to(root):
            lines.setdefault(str(path.relative_to(root)), {}).setdefault(line, set()).update(node_ids)

    data = coverage.CoverageData(basename=str(out / "inproc.coverage"))
    data.read()
    for measured in data.measured_files():
        for line, contexts in data.contexts_by_lineno(measured).items():
            add(measured, line, {c for c in contexts if c})
    tags: dict[str, str] = meta["subprocess_tags"]
    for path in (out / "sub").glob("t*"):
        node_id = tags.get(path.name.split(".")[0])
        if node_id is None:
            continue
        sub = coverage.CoverageData(basename=str(path))
        sub.read()
        for measured in sub.measured_files():
            for line in sub.lines(measured) or ():
                add(measured, line, {node_id})
    return lines, meta["results"]
