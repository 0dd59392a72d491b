"""`make mutate`: run every mutant of the money modules against the tests that run its line.

Stages:
1. Two copies of the repository are made under var/mutation (the mutant is written to disk,
   because terminal subprocesses must import it too).
2. The map: the whole suite runs once, split over the copies, under coverage (coverage_map),
   giving each line's tests and each test's time. It is kept and reused while no file under
   firmware/, drivers/, board/ or tests/ changes.
3. Each mutant runs tier 1 (its module's own test files, those that run the line), then, if it
   survived, tier 2 (every other test that runs the line, fastest first, within a budget).
   A test run is a child forked from a warm parent that has already imported pytest and the
   heavy libraries, so a mutant costs its tests, not an interpreter start.
4. The report: score per module (killed / non-equivalent) and every survivor's diff, printed
   and written to var/mutation/report.txt, with the results in var/mutation/results.json.

Exit status: 0 when every module reaches the goal (90%), 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation import config
from tests.mutation.operators import Mutant, diff, mutants
from tests.mutation.references import ReferenceIndex

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "var" / "mutation"
GOAL = 0.90
COPY_DIRS = ("firmware", "drivers", "board", "tests", "c_ext", "docs", "mk")
COPY_FILES = ("pyproject.toml", "Makefile", "README.md", "requirements.in", "requirements.txt",
              "requirements-build.in", "requirements-build.txt", "requirements-dev.in",
              "requirements-dev.txt")
_PROJECT_PACKAGES = frozenset({"tests", "firmware", "drivers", "board", "conftest"})


@dataclass
class Outcome:
    key: str
    module: str
    status: str  # killed | survived | timeout | equivalent | no-tests | error
    tier: int = 0
    killer: str = ""
    tests_run: int = 0
    capped: bool = False
    seconds: float = 0.0
    note: str = ""


@dataclass
class Plan:
    mutant: Mutant
    tier1: list[str] = field(default_factory=list)
    tier2: list[str] = field(default_factory=list)
    capped: bool = False


def _copy_tree(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "snapshots_out")
    for name in COPY_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, symlinks=True)
    for name in COPY_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for built in ROOT.glob("_posio*.so"):
        shutil.copy2(built, dest / built.name)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def _source_digest() -> str:
    digest = hashlib.sha256()
    for name in ("firmware", "drivers", "board", "tests"):
        for path in sorted((ROOT / name).rglob("*.py")):
            if path.is_relative_to(ROOT / "tests" / "mutation"):
                continue  # the runner itself does not change what the tests run
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _test_files() -> list[str]:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))
    return [f for f in files if not f.startswith(config.MAP_EXCLUDE)]


def build_map(copies: list[Path]) -> Path:
    """Run the suite under the coverage map, split over the copies; reuse a fresh one."""
    digest = _source_digest()
    maps = WORK / "map"
    stamp = maps / "digest"
    if stamp.exists() and stamp.read_text() == digest:
        print(f"map: reusing {maps} (no source changed)", flush=True)
        return maps
    shutil.rmtree(maps, ignore_errors=True)
    files = _test_files()
    # Balance the halves by file size, a fair stand-in for a file's run time.
    halves: list[list[str]] = [[] for _ in copies]
    weights = [0] * len(copies)
    for f in sorted(files, key=lambda f: -(ROOT / f).stat().st_size):
        i = weights.index(min(weights))
        halves[i].append(f)
        weights[i] += (ROOT / f).stat().st_size
    procs = []
    started = time.monotonic()
    for i, (copy, half) in enumerate(zip(copies, halves, strict=True)):
        out = maps / f"part{i}"
        out.mkdir(parents=True)
        env = dict(os.environ, MUTATION_MAP_OUT=str(out),
                   MUTATION_MAP_FILES=str(copy / "firmware" / "*"))
        log = open(out / "pytest.log", "w")  # noqa: SIM115 (closed when the child ends)
        procs.append((subprocess.Popen(
            [str(copy / ".venv/bin/python"), "-m", "pytest", "-p", "tests.mutation.coverage_map",
             "-q", "-p", "no:cacheprovider", *half],
            cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait()
        log.close()
    print(f"map: the suite ran under coverage in {time.monotonic() - started:.0f} s", flush=True)
    stamp.write_text(digest)
    return maps


def load_map(maps: Path, copies: list[Path]
             ) -> tuple[dict[str, dict[int, set[str]]], dict[str, dict[str, object]]]:
    """{file: {line: {node ids}}} over every firmware file, and each test's outcome and time."""
    from tests.mutation import coverage_map

    lines: dict[str, dict[int, set[str]]] = {}
    tests: dict[str, dict[str, object]] = {}
    for i, copy in enumerate(copies):
        part_lines, part_tests = coverage_map.load(maps / f"part{i}", copy)
        tests.update(part_tests)
        for module, by_line in part_lines.items():
            for line, ids in by_line.items():
                lines.setdefault(module, {}).setdefault(line, set()).update(ids)
    return lines, tests


def plan(mutant: Mutant, end_line: int, at_import: bool, lines: dict[str, dict[int, set[str]]],
         tests: dict[str, dict[str, object]], refs: ReferenceIndex) -> Plan:
    own = config.MODULES[mutant.module]
    passing = {t for t, r in tests.items() if r.get("outcome") == "passed"}
    covering: set[str] = set()
    if at_import:
        # A module-level line (a table, a set of states, an enum member) runs once at import,
        # before any test: the tests that depend on it are those that run a line reading it.
        names: set[str] = set()
        for line in range(mutant.line, end_line + 1):
            for module, reading in refs.reading_lines(mutant.module, line):
                covering |= lines.get(module, {}).get(reading, set())
            names |= refs.names_behind(mutant.module, line)
        # ...and the tests that read the table themselves (pinning it to the docs, say).
        direct = refs.tests_naming(names)
        covering |= {t for t in tests
                     if f"{t.split('::')[0]}::{t.split('::')[-1].split('[')[0]}" in direct}
        if not covering:
            covering = set().union(*lines.get(mutant.module, {}).values())
    else:
        for line in range(mutant.line, end_line + 1):
            covering |= lines.get(mutant.module, {}).get(line, set())
    covering &= passing

    def seconds(t: str) -> float:
        return float(tests[t].get("seconds", 1.0))

    tier1 = sorted((t for t in covering if t.split("::")[0] in own), key=seconds)
    rest = sorted((t for t in covering if t.split("::")[0] not in own), key=seconds)
    return Plan(mutant, tier1, rest)


class _Recorder:
    """Lives in the forked child: notes the first failing test for the parent."""

    def __init__(self) -> None:
        self.failed = ""

    def pytest_runtest_logreport(self, report: object) -> None:
        if getattr(report, "failed", False) and not self.failed:
            self.failed = getattr(report, "nodeid", "")


def _run_tests(copy: Path, node_ids: list[str], deadline_s: float, per_test_s: float,
               result_file: Path) -> tuple[str, str]:
    """Run node ids in a forked child at `copy`; ("killed"|"survived"|"timeout"|"error", test)."""
    if not node_ids:
        return "survived", ""
    result_file.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.setsid()
            os.chdir(copy)
            # The parent imported tests.mutation from the repository: the child must import
            # the tests and the (mutated) firmware from its copy, never from there.
            for name in [n for n in sys.modules if n.split(".")[0] in _PROJECT_PACKAGES]:
                del sys.modules[name]
            sys.path[:] = [str(copy)] + [p for p in sys.path if p not in ("", str(ROOT))]
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            recorder = _Recorder()
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--rootdir", str(copy),
                                f"--timeout={per_test_s:.0f}", *node_ids], plugins=[recorder])
            result_file.write_text(json.dumps({"code": int(code), "failed": recorder.failed}))
        finally:
            os._exit(0)
    deadline = time.monotonic() + deadline_s
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return "timeout", ""
        time.sleep(0.02)
    _kill_group(pid)  # terminal subprocesses a failed test left behind
    if not result_file.exists():
        return "error", "the test run died"
    result = json.loads(result_file.read_text())
    code = result["code"]
    if code == 0:
        return "survived", ""
    if code in (1, 2):  # a failing test, or a mutant that breaks collection (import)
        return "killed", result["failed"] or "collection"
    if code == 4:
        # A node id was not found: the mutant changed a value a test is parametrized by (an
        # enum member's value in its id), so run every parametrization of those functions; or
        # the test module itself no longer imports (a module-level constant the mutant now
        # refuses), so run the files, where that shows as the collection error it is.
        for coarser in ({n.split("[")[0] for n in node_ids}, {n.split("::")[0] for n in node_ids}):
            if sorted(coarser) != sorted(node_ids):
                return _run_tests(copy, sorted(coarser), deadline_s, per_test_s, result_file)
    return "error", f"pytest exit {code}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_mutant(copy: Path, work: Path, p: Plan, tests: dict[str, dict[str, object]],
               original: str) -> Outcome:
    m = p.mutant
    target = copy / m.module
    outcome = Outcome(m.key, m.module, "no-tests")
    if not p.tier1 and not p.tier2:
        return outcome
    started = time.monotonic()
    work.mkdir(exist_ok=True)
    target.write_text(m.mutated_source)
    try:
        for tier, ids in ((1, p.tier1), (2, p.tier2)):
            if not ids:
                continue
            times = [float(tests[t].get("seconds", 1.0)) for t in ids]
            # A test that hangs with the mutant is failed by pytest-timeout long before the
            # suite's own 120 s: a few times its measured time.
            per_test = max(config.TEST_TIMEOUT_MIN_S, config.HANG_FACTOR * max(times))
            status, killer = _run_tests(copy, ids, config.HANG_FACTOR * sum(times)
                                        + config.HANG_GRACE_S, per_test, work / "result.json")
            outcome.tier, outcome.tests_run = tier, outcome.tests_run + len(ids)
            if status != "survived":
                outcome.status, outcome.killer = status, killer
                break
        else:
            outcome.status, outcome.capped = "survived", p.capped
    finally:
        target.write_text(original)
    outcome.seconds = round(time.monotonic() - started, 2)
    return outcome


def _equivalents() -> dict[str, str]:
    path = Path(__file__).with_name("equivalent.toml")
    if not path.exists():
        return {}
    return {e["key"]: e["why"] for e in tomllib.loads(path.read_text()).get("equivalent", [])}


def _warm_imports() -> None:
    """Import what every test run needs, once, in the parent the children fork from."""
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401

    for name in ("cryptography.hazmat.primitives.ciphers", "sqlite3", "serial", "PIL.Image",
                 "asyncio", "json", "decimal"):
        with contextlib.suppress(ImportError):
            __import__(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="only this module (repeatable)")
    parser.add_argument("--survivors", action="store_true",
                        help="rerun only the mutants that survived the last run")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    modules = args.module or list(config.MODULES)
    unknown = [m for m in modules if m not in config.MODULES]
    if unknown:
        parser.error(f"not a money module: {', '.join(unknown)} (see tests/mutation/config.py)")
    WORK.mkdir(parents=True, exist_ok=True)
    copies = [WORK / f"copy{i}" for i in range(args.jobs)]
    for copy in copies:
        _copy_tree(copy)
    maps = build_map(copies)
    lines, tests = load_map(maps, copies)
    refs = ReferenceIndex(ROOT)
    failing = sorted(t for t, r in tests.items() if r.get("outcome") == "failed")
    if failing:
        print(f"map: {len(failing)} tests failed without any mutant and are left out:", *failing,
              sep="\n  ", flush=True)

    results_path = WORK / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    progress_path = WORK / "progress.jsonl"
    if progress_path.exists() and (not results_path.exists()
                                   or progress_path.stat().st_mtime > results_path.stat().st_mtime):
        # A run stopped before its end left its outcomes only here.
        for line in progress_path.read_text().splitlines():
            row = json.loads(line)
            previous[row["key"]] = row
    equivalent = _equivalents()
    plans: list[Plan] = []
    originals: dict[str, str] = {}
    for module in modules:
        source = (ROOT / module).read_text()
        originals[module] = source
        tree = ast.parse(source)
        ends = {n.lineno: getattr(n, "end_lineno", n.lineno) for n in ast.walk(tree)
                if hasattr(n, "lineno")}
        in_functions = {line for n in ast.walk(tree)
                        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                        for line in range(n.body[0].lineno, n.end_lineno + 1)}
        for m in mutants(module, source):
            if args.survivors and previous.get(m.key, {}).get("status") not in ("survived", "no-tests",
                                                                                   "error", None):
                continue
            plans.append(plan(m, ends.get(m.line, m.line), m.line not in in_functions,
                              lines, tests, refs))
    print(f"mutants: {len(plans)} in {len(modules)} modules, {args.jobs} at a time", flush=True)

    _warm_imports()
    outcomes = _run_all(plans, copies, tests, originals, equivalent)
    merged = {**previous, **{o.key: o.__dict__ for o in outcomes}}
    live_keys = {m.key for module in modules for m in mutants(module, originals[module])}
    for key in [k for k, v in merged.items() if v["module"] in modules and k not in live_keys]:
        del merged[key]  # a mutant of code that has changed since
    results_path.write_text(json.dumps(merged, indent=1, ensure_ascii=False))
    return report(merged, modules, originals, equivalent)


def _run_all(plans: list[Plan], copies: list[Path], tests: dict[str, dict[str, object]],
             originals: dict[str, str], equivalent: dict[str, str]) -> list[Outcome]:
    """Run the plans over the copies, one worker process per copy."""
    queue = list(reversed(plans))
    outcomes: list[Outcome] = []
    running: dict[int, tuple[Plan, Path]] = {}
    free = list(copies)
    kills: dict[str, dict[str, int]] = {}  # module -> test -> mutants it killed so far
    total, started = len(plans), time.monotonic()
    # Every outcome as it comes, so a long run can be read (and survivors worked on) before
    # it ends: `tail -f var/mutation/progress.jsonl`.
    progress = (WORK / "progress.jsonl").open("w")
    while queue or running:
        while queue and free:
            p = queue.pop()
            if p.mutant.key in equivalent:
                outcomes.append(Outcome(p.mutant.key, p.mutant.module, "equivalent",
                                        note=equivalent[p.mutant.key]))
                continue
            _order_by_kills(p, kills.get(p.mutant.module, {}), tests)
            copy = free.pop()
            pid = os.fork()
            if pid == 0:
                try:
                    out = run_mutant(copy, copy.parent / f"{copy.name}.work", p, tests,
                                     originals[p.mutant.module])
                    (copy.parent / f"{copy.name}.outcome").write_text(json.dumps(out.__dict__))
                finally:
                    os._exit(0)
            running[pid] = (p, copy)
        if not running:
            continue
        pid, _ = os.wait()
        p, copy = running.pop(pid)
        free.append(copy)
        data = json.loads((copy.parent / f"{copy.name}.outcome").read_text())
        outcomes.append(Outcome(**data))
        if data["status"] == "killed" and data["killer"]:
            by_test = kills.setdefault(data["module"], {})
            by_test[data["killer"]] = by_test.get(data["killer"], 0) + 1
        progress.write(json.dumps(data, ensure_ascii=False) + "\n")
        progress.flush()
        done = len(outcomes)
        if done % 25 == 0 or not queue:
            rate = (time.monotonic() - started) / done
            print(f"  {done}/{total} done, {rate:.1f} s each, about "
                  f"{rate * (total - done) / 60:.0f} min left", flush=True)
    progress.close()
    return outcomes


def _order_by_kills(p: Plan, kills: dict[str, int], tests: dict[str, dict[str, object]]) -> None:
    """Tier 1 in full, and tier 2 cut to a few test files, both ordered so that the tests that
    killed most of this module's mutants so far go first, then the fastest: a mutant is usually
    killed by a test that killed its neighbours. Tier 2 keeps the files with the most kills
    (then the cheapest) up to MAX_TIER2_FILES files and TIER2_BUDGET_S seconds of test time,
    because importing a test file costs more than most of its tests."""
    def seconds(t: str) -> float:
        return float(tests[t].get("seconds", 1.0))

    def rank(t: str) -> tuple[int, float]:
        return -kills.get(t, 0), seconds(t)

    p.tier1.sort(key=rank)
    by_file: dict[str, list[str]] = {}
    for t in p.tier2:
        by_file.setdefault(t.split("::")[0], []).append(t)
    ranked = sorted(by_file.items(), key=lambda item: (
        -sum(kills.get(t, 0) for t in item[1]), sum(seconds(t) for t in item[1])))
    chosen: list[str] = []
    spent = 0.0
    for _, file_tests in ranked[:config.MAX_TIER2_FILES]:
        cost = sum(seconds(t) for t in file_tests)
        if chosen and spent + cost > config.TIER2_BUDGET_S:
            break
        chosen += file_tests
        spent += cost
    p.capped = len(chosen) < len(p.tier2)
    p.tier2 = sorted(chosen, key=rank)


def report(results: dict[str, dict[str, object]], modules: list[str], originals: dict[str, str],
           equivalent: dict[str, str]) -> int:
    by_key = {m.key: m for module in modules for m in mutants(module, originals[module])}
    lines = ["Mutation score per money module (killed / mutants that are not equivalent):", ""]
    ok = True
    survivors: list[str] = []
    for module in modules:
        rows = [r for r in results.values() if r["module"] == module]
        equiv = sum(r["status"] == "equivalent" for r in rows)
        killed = sum(r["status"] in ("killed", "timeout") for r in rows)
        counted = len(rows) - equiv
        score = killed / counted if counted else 1.0
        ok &= score >= GOAL
        lines.append(f"  {module:36s} {score:6.1%}  killed {killed:4d} of {counted:4d}"
                     f"  (equivalent {equiv}){'' if score >= GOAL else '  BELOW 90%'}")
        for r in rows:
            if r["status"] in ("survived", "no-tests", "error") and r["key"] in by_key:
                m = by_key[r["key"]]
                why = {"survived": f"survived tier {r['tier']}" + (" (tier 2 capped)"
                                                                      if r["capped"] else ""),
                       "no-tests": "no test runs this line",
                       "error": f"error: {r['killer']}"}[r["status"]]
                survivors.append(f"--- {r['key']}\n    {m.description} ({why}, {r['tests_run']} tests)\n"
                                 + diff(m, originals[module]))
    lines += ["", f"Survivors ({len(survivors)}):", *survivors]
    text = "\n".join(lines)
    (WORK / "report.txt").write_text(text + "\n")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
