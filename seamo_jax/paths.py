"""User paths: local folders or object-store URLs (`gs://`, `s3://`), as `etils.epath.Path`.

Every path a user gives (workdir, data_dir, init_from, checkpoint, export and
probe outputs) goes through `user_path`. `pathlib` would turn `gs://b/run`
into a local folder `./gs:/b/run`, so each host of a pod would checkpoint to
its own disk; epath hands URLs to fsspec (gcsfs, s3fs), as Orbax, TFDS and
Grain do. Object stores have no append, rename or partial write: writers
here write whole files (`write_text` / `write_bytes`).
"""

from __future__ import annotations

import os
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike, epath.Path]


def is_url(path: PathLike) -> bool:
    """True for `scheme://...` paths (object stores), False for local paths."""
    return "://" in os.fspath(path) if not isinstance(path, epath.Path) else "://" in str(path)


def user_path(path: PathLike) -> epath.Path:
    """A user-given path as `epath.Path`: URLs unchanged, local paths with `~` expanded and made absolute.

    Absolute local paths keep a run's files in one place when later stages
    run from another directory.
    """
    text = str(path)
    if is_url(text):
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_bytes_atomic(path: epath.Path, data: bytes) -> None:
    """Writes a whole file so that readers never see part of it.

    Locally through a temp file renamed over `path`; on object stores an
    object becomes visible only once complete, so one write is atomic already
    (and rename there is a copy).
    """
    if is_url(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_text_atomic(path: epath.Path, text: str) -> None:
    """`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))
