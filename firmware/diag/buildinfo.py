"""Version and build info for the diagnostics screen: firmware version and commit, Python,
the C extension _posio's build record, SQLite and the key libraries, and the board name.
Nothing here may fail the screen: whatever cannot be found is shown as "unknown".
"""

from __future__ import annotations

import importlib
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import firmware
from firmware.ui.core import Catalog, DiagResult, say

NAME = "version"
REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("cffi", "cryptography", "pyiso8583")
C_EXTENSION = "c_ext.posio"

CATALOG: Catalog = {
    "ok": ("Firmware {version}, C extension built", "固件 {version}, 扩展模块已编译"),
    "ok_next": ("Quote these lines when you call support", "联系维护时请提供以下信息"),
    "no_ext": ("C extension _posio missing - firmware cannot run", "扩展模块 _posio 缺失 - 固件无法运行"),
    "no_ext_next": ("Reinstall the firmware (make build)", "请联系维护重新安装固件"),
    "unknown": ("unknown", "未知"),
    "not_installed": ("not installed", "未安装"),
    "line_firmware": ("Firmware {version}", "固件 {version}"),
    "line_package": ("Package {version}", "程序包 {version}"),
    "line_commit": ("Commit {commit}", "提交 {commit}"),
    "line_board": ("Board {board}", "主板 {board}"),
    "line_python": ("Python {version}", "Python {version}"),
    "line_posio": ("_posio {item}: {value}", "_posio {item}: {value}"),
    "line_posio_error": ("_posio: {error}", "_posio: {error}"),
    "line_sqlite": ("SQLite {version}", "SQLite {version}"),
    "line_library": ("{name} {version}", "{name} {version}"),
}


def firmware_version(repo_root: Path = REPO_ROOT) -> str | None:
    """The version in pyproject.toml at the repo root, or None where there is none."""
    try:
        with open(repo_root / "pyproject.toml", "rb") as project_file:
            version = tomllib.load(project_file).get("project", {}).get("version")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return str(version) if version else None


def git_commit(repo_root: Path = REPO_ROOT) -> str | None:
    """The commit from a BUILD_INFO file (line 'commit=<sha>' or a bare sha), else git, else None."""
    try:
        text = (repo_root / "BUILD_INFO").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "commit" and value.strip():
            return value.strip()[:12]
        if not sep and key:
            return key[:12]
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo_root,
                              capture_output=True, text=True, timeout=2.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def library_version(name: str) -> str | None:
    # importlib.metadata (email, zipfile ...) and platform only for the diagnostics screen:
    # the firmware imports this module at start for firmware_version.
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_info(board_name: str, lang: str, *, repo_root: Path = REPO_ROOT) -> DiagResult:
    import platform  # the screen's only (see library_version)

    unknown = say(CATALOG, "unknown", lang)
    version = firmware_version(repo_root)
    package = getattr(firmware, "__version__", None)
    lines = [say(CATALOG, "line_firmware", lang, version=version or package or unknown)]
    if version and package and package != version:
        lines.append(say(CATALOG, "line_package", lang, version=package))
    lines.append(say(CATALOG, "line_commit", lang, commit=git_commit(repo_root) or unknown))
    lines.append(say(CATALOG, "line_board", lang, board=board_name or unknown))
    lines.append(say(CATALOG, "line_python", lang, version=platform.python_version()))
    ext_error = None
    try:
        posio = importlib.import_module(C_EXTENSION)
        build = dict(getattr(posio, "BUILD_INFO", {}))
        build.setdefault("implementation", getattr(posio, "IMPLEMENTATION", unknown))
        for key in ("implementation", "compiler", "flags", "hardening", "built_at"):
            lines.append(say(CATALOG, "line_posio", lang, item=key, value=build.get(key, unknown)))
    except ImportError as exc:
        ext_error = str(exc)
        lines.append(say(CATALOG, "line_posio_error", lang, error=ext_error))
    lines.append(say(CATALOG, "line_sqlite", lang, version=sqlite3.sqlite_version))
    for name in LIBRARIES:
        lines.append(say(CATALOG, "line_library", lang, name=name,
                         version=library_version(name) or say(CATALOG, "not_installed", lang)))
    if ext_error is not None:
        return DiagResult(NAME, False, say(CATALOG, "no_ext", lang), say(CATALOG, "no_ext_next", lang),
                          tuple(lines))
    return DiagResult(NAME, True, say(CATALOG, "ok", lang, version=version or package or unknown),
                      say(CATALOG, "ok_next", lang), tuple(lines))
