"""``python -m rvsl``: the version and the console commands; ``python -m rvsl COMMAND ARGS...``
runs one, exactly as typing ``COMMAND ARGS...`` would (``rvsl-train`` or just ``train``).

The commands are this distribution's ``console_scripts`` entry points, read from its installed
metadata, and each one's line is the first line of its module's docstring (read, not imported),
so the list cannot drift from what ``pip install`` puts on the PATH.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from rvsl import __version__

DISTRIBUTION = "rvsl"
PROG = "python -m rvsl"


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def commands() -> dict[str, EntryPoint]:
    """Console command name -> entry point, for this distribution only, sorted by name."""
    found = {
        ep.name: ep
        for ep in entry_points(group="console_scripts")
        if ep.dist is not None and _normalised(ep.dist.name) == DISTRIBUTION
    }
    return dict(sorted(found.items()))


def summary(entry: EntryPoint) -> str:
    """One line about a command: the first line of its module's docstring, the usage in
    double backticks before ``: `` left out; the bare usage when the line has nothing else."""
    spec = importlib.util.find_spec(entry.module)
    try:
        source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
        doc = ast.get_docstring(ast.parse(source)) or ""
    except (OSError, SyntaxError, ValueError):
        doc = ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    _, sep, rest = first.partition("``: ")
    line = rest if sep else first
    line = line.replace("``", "").strip().rstrip(".")
    return line.removeprefix(f"{entry.name} ") if not sep else line


def help_text() -> str:
    found = commands()
    width = max((len(name) for name in found), default=0)
    lines = [
        f"rvsl {__version__}: RVSL vehicle re-identification in haze (ECCV 2022)",
        "",
        f"usage: {PROG} COMMAND [ARGS...]   (the same as running COMMAND [ARGS...])",
        f"       {PROG} --version",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary(entry)}" for name, entry in found.items()),
    ]
    if not found:
        lines.append("  (none: rvsl is not installed; pip install -e . puts them on the PATH)")
    lines += ["", f"{PROG} COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0
    if argv[0] == "--version":
        print(f"rvsl {__version__}")
        return 0
    found = commands()
    name = argv[0] if argv[0] in found else f"rvsl-{argv[0]}"
    if name not in found:
        print(
            f"{PROG}: error: unknown command {argv[0]!r}; one of {', '.join(found) or 'none'} "
            f"(see {PROG} --help)",
            file=sys.stderr,
        )
        return 2
    command = found[name].load()
    sys.argv = [name, *argv[1:]]  # what the command parses, as if run by its own name
    result = command()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
