"""Atomic writes and small table helpers shared by every stage.

Every file a stage produces goes through `atomic_path`: it is written under a temporary name in
the same folder and renamed into place, so a crash never leaves a half file that looks finished.
"""

from __future__ import annotations

import csv
import errno
import glob
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


# The one logger of every module; jobs.start_job sends its lines to the job's log file.
LOG = logging.getLogger("datadream")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK
FOLDER_MODE = 0o777 & ~UMASK
TMP_SUFFIX = ".tmp"
ASIDE_SUFFIX = ".aside"


def _fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data (a folder's: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync a folder say so
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it onto `target`.

    The file is flushed before the rename and the folder after it: without both, a power loss or an
    NFS client crash can leave `target` empty or torn although the rename was seen.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp makes owner-only files; finished outputs get the usual mode
        _fsync_path(tmp)
        os.replace(tmp, target)
        _fsync_path(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it replaces `target` as a whole.

    The old folder is renamed aside before the new one takes its name and deleted only after, so a
    kill at any moment leaves one complete version on disk (`clean_stale_temporaries` puts an
    aside folder back when the new one never arrived).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        yield staging
        publish_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, target: Path) -> None:
    """Rename a finished staging folder onto `target`, whole.

    An old `target` is renamed aside before the new one takes its name and deleted only after, so a
    kill at any moment leaves one complete version on disk (`clean_stale_temporaries` puts an aside
    folder back when the new one never arrived).
    """
    for path in [staging, *staging.rglob("*")]:
        path.chmod(FOLDER_MODE if path.is_dir() else FILE_MODE)  # mkdtemp makes owner-only folders
    for path in sorted(staging.rglob("*"), reverse=True):
        _fsync_path(path)
    _fsync_path(staging)
    aside = None
    try:
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=ASIDE_SUFFIX, dir=target.parent))
            os.replace(target, aside)  # an empty folder is replaced by a rename
        os.replace(staging, target)
        _fsync_path(target.parent)
    finally:
        if aside is not None:
            if target.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(aside, target)


def clean_stale_temporaries(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Remove what killed writers left behind for `paths`, the files and folders one job writes.

    Beside each path: its own temporaries (`.{name}.*.tmp`, from `atomic_path` / `atomic_folder`);
    an old version set aside by `atomic_folder` is put back when the path is missing, else removed.
    Inside each path that is a folder, which the job owns whole: every `.*.tmp` and `.lora.*` entry.
    Temporaries of other names are left alone: a folder such as results/summary/ is shared by jobs
    that run at the same time. Returns the removed paths.
    """
    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        for aside in sorted(path.parent.glob(f".{glob.escape(path.name)}.*{ASIDE_SUFFIX}")):
            if not path.exists():
                os.replace(aside, path)
            else:
                _remove(aside)
                removed.append(aside)
        stale = list(path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"))
        if path.is_dir():
            stale += [entry for pattern in (f".*{TMP_SUFFIX}", ".lora.*") for entry in path.rglob(pattern)]
        for entry in sorted(set(stale), reverse=True):
            if entry.exists() or entry.is_symlink():
                _remove(entry)
                removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_csv(target: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV with a fixed header; `\\n` line endings so reruns are byte-identical."""
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
