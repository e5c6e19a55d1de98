"""Temporary siblings for atomic writes, named so that a later run can clear what a kill left.

A file is written beside its destination and renamed into place, so nobody sees half of it. An
exception or Ctrl-C removes the temporary (the writers' `except BaseException`), but SIGKILL
cannot be caught: the name carries the writer's pid and host, and any later write into the same
folder removes this host's temporaries whose process is gone (a pid says nothing about another
host's processes on a shared folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

PREFIX = ".spacetime-tmp-"


def _prefix() -> str:
    return f"{PREFIX}{os.getpid()}-{socket.gethostname()}-"


def temp_file(folder: Path, suffix: str = ".tmp") -> Path:
    """A new empty file in `folder` (mode 0600 until its writer says otherwise)."""
    clear_stale(folder)
    fd, name = tempfile.mkstemp(dir=folder, prefix=_prefix(), suffix=suffix)
    os.close(fd)
    return Path(name)


def temp_folder(folder: Path) -> Path:
    """A new empty folder in `folder`."""
    clear_stale(folder)
    return Path(tempfile.mkdtemp(dir=folder, prefix=_prefix()))


def write_together(files: Mapping[Path, bytes]) -> None:
    """Write files that belong together (a mesh and the material and texture it names): each
    through a temporary sibling, renamed into place in the given order only once all are written,
    so put last the file that names the others. On any failure the temporaries, and whatever this
    call had already renamed into place, are removed."""
    temporaries: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporaries[path] = tmp = temp_file(path.parent)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            # mkstemp's files are private (0600); these get the mode any new file gets.
            os.chmod(tmp, 0o666 & ~umask())
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path in [*temporaries.values(), *placed]:
            path.unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clear_stale(folder: Path) -> list[Path]:
    """Remove the temporaries in `folder` whose writing process no longer exists."""
    removed = []
    try:
        entries = [p for p in Path(folder).iterdir() if p.name.startswith(PREFIX)]
    except OSError:  # not a folder (yet), or unreadable: nothing of ours to clear
        return removed
    for path in entries:
        pid, _, rest = path.name[len(PREFIX) :].partition("-")
        here = rest.startswith(f"{socket.gethostname()}-")
        if not here or not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def writable_place(path: Path) -> Path:
    """The nearest existing folder above `path`, after checking that `path` can be made there:
    each name within the file system's limit, the whole path within its limit, and the folder
    taking new files. Raises OSError with a message naming the problem."""
    path = Path(path)
    place = path.absolute().parent
    while not os.path.exists(place) and place != place.parent:  # pathlib raises on long names
        place = place.parent
    name_max = _pathconf(place, "PC_NAME_MAX", 255)
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise OSError(
                f"the name {part[:24]}… is {len(os.fsencode(part))} bytes, over this file "
                f"system's {name_max}"
            )
    path_max = _pathconf(place, "PC_PATH_MAX", 4096)
    if len(os.fsencode(path.absolute())) >= path_max:
        raise OSError(f"the path is over {path_max} bytes")
    try:  # os.access says yes to root everywhere; creating a file is the real test
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError:
        raise OSError(f"{place} is not a writable folder") from None
    return place


def _pathconf(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):  # not on this platform or file system
        return default


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
