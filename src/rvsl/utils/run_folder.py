"""A run writes only into a run folder of its own: a fresh one, or one an earlier rvsl run made.

``rvsl-train`` and ``rvsl-eval`` write checkpoints, metrics, pictures and results under fixed
names in their run folder, replacing what is there. So before any work they claim the folder:
it must be empty but for what Hydra has just written for this run (``.hydra/`` and the job's
log), or carry the ``.rvsl-run`` mark of an earlier run (a run folder of a version before the
mark counts when it holds checkpoints). A folder holding anything else, say a user's own files
named by ``hydra.run.dir=``, is refused in one sentence and left as it is. The one file a run
may write elsewhere, ``rvsl-eval export_features=PATH``, replaces only a feature file of its own
(:func:`claim_features_file`).
"""

from __future__ import annotations

import datetime
import zipfile
from collections.abc import Sequence
from pathlib import Path

from rvsl.utils.config import RunConfigError

MARK = ".rvsl-run"
HYDRA_OWN = (".hydra",)
#: How the arrays of an ``export_features`` file end
#: (``rvsl.evaluation.evaluate._exported_arrays``).
FEATURE_ARRAYS = ("_features", "_pids", "_camids", "_is_query", "_paths")


def _earlier_run(folder: Path) -> bool:
    """A run folder of a version that did not mark its folders: it holds checkpoints."""
    return any(folder.glob("checkpoints/*.ckpt")) or any(folder.glob("*/checkpoints/*.ckpt"))


def claim_run_folder(
    folder: str | Path, tool: str, own: Sequence[str] = (), setting: str = "hydra.run.dir"
) -> Path:
    """Mark ``folder`` as ``tool``'s run folder, or raise RunConfigError naming what in it
    rvsl did not write. ``own``: names this run has already written there (Hydra's log)."""
    folder = Path(folder)
    if (folder / MARK).is_file():
        return folder
    allowed = {*HYDRA_OWN, *own}
    entries = folder.iterdir() if folder.is_dir() else ()
    foreign = sorted(p.name for p in entries if p.name not in allowed)
    if foreign and not _earlier_run(folder):
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise RunConfigError(
            f"{setting}={folder} already holds files rvsl did not write ({shown}); a run "
            "writes its checkpoints, logs and results there, so choose a fresh run folder"
        )
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARK).write_text(f"{tool} run folder, claimed {stamp}\n")
    return folder


def _features_file(path: Path) -> bool:
    """An ``.npz`` holding only the arrays ``export_features`` writes."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(n.removesuffix(".npy").endswith(FEATURE_ARRAYS) for n in names)


def claim_features_file(path: str | Path, setting: str = "export_features") -> Path:
    """The file ``numpy.savez`` will write for ``path`` (``.npz`` appended when missing);
    RunConfigError when it exists and is not a feature file rvsl-eval wrote."""
    path = Path(path)
    target = path if path.suffix == ".npz" else path.with_name(f"{path.name}.npz")
    if (target.exists() or target.is_symlink()) and not _features_file(target):
        raise RunConfigError(
            f"{setting}={path}: {target} already exists and is not a feature file rvsl-eval "
            "wrote, so it is left as it is; choose another path"
        )
    return target
