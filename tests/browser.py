"""Headless Chromium for the tests: open a page from disk and dump its DOM or a screenshot.

Chromium is a system package, not a Python one: ``make test`` installs it on Debian when it is
missing and the user is root. A missing browser is an error here, never a skip, and the error
says how to install it. ``RVSL_CHROMIUM`` names another binary (a Chrome, say).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "the browser tests need Chromium and none was found (looked for $RVSL_CHROMIUM, chromium, "
    "chromium-browser, google-chrome); install it with `apt-get install -y chromium` "
    "(Debian/Ubuntu, as root; `apt-get update` first on a fresh machine) or set RVSL_CHROMIUM "
    "to a Chrome/Chromium binary"
)
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: a quiet, offline, throw-away browser: no sandbox (root in a container), no GPU, no network
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)


class BrowserMissingError(RuntimeError):
    """No Chromium to run; the message says how to install one."""


def find_chromium() -> str:
    """The Chromium binary: ``$RVSL_CHROMIUM`` when set, else the first of :data:`NAMES` on
    the PATH; :class:`BrowserMissingError` when there is none."""
    named = os.environ.get("RVSL_CHROMIUM")
    if named:
        found = shutil.which(named)
        if found is None:
            message = f"RVSL_CHROMIUM={named} is not an executable; {INSTALL_HINT}"
            raise BrowserMissingError(message)
        return found
    for name in NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise BrowserMissingError(INSTALL_HINT)


def run_chromium(page: Path, *args: str, budget_ms: int = 5000, timeout: float = 120) -> str:
    """Open ``page`` (a file, as ``file://``) in a fresh headless profile, with ``args``; its
    stdout. ``--virtual-time-budget`` lets the page load (and its load handlers run) before
    Chromium dumps or shoots it. A failure raises with Chromium's own stderr."""
    binary = find_chromium()
    with tempfile.TemporaryDirectory(prefix="rvsl-chromium-") as profile:
        command = [
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            Path(page).resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"chromium exited with {done.returncode}: {' '.join(command)}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def dump_dom(page: Path) -> str:
    """The page's DOM after it loaded and its scripts ran, as HTML."""
    dom = run_chromium(page, "--dump-dom")
    if "<html" not in dom:
        raise RuntimeError(f"chromium dumped no DOM for {page}: {dom[:500]!r}")
    return dom


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1400, 900)) -> Path:
    """A PNG of the page's first ``size`` (width, height) pixels."""
    png = Path(png).resolve()
    run_chromium(page, f"--screenshot={png}", f"--window-size={size[0]},{size[1]}")
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot at {png}")
    return png
