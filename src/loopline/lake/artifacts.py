"""Content-addressed artifact store: blobs named by their sha256, written atomically.

Callers never choose a path: an artifact is put as bytes or from a file and comes back as an
opaque id `sha256:<64 hex>`. Ids are validated before they touch the file system, so an id can
never reach outside the store (the path-traversal class of bugs other trackers had).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

ARTIFACT_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


class ArtifactError(ValueError):
    """An artifact id is malformed or names no stored artifact, or its content was altered."""


def _check_id(artifact_id: str) -> str:
    if not isinstance(artifact_id, str) or not ARTIFACT_ID.match(artifact_id):
        raise ArtifactError(f"artifact id must look like 'sha256:<64 hex digits>': {artifact_id!r}")
    return artifact_id.split(":", 1)[1]


class ArtifactStore:
    """Blobs under `root/ab/cd/<hex>`; identical content is stored once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def _commit(self, tmp: Path, digest: str) -> str:
        final = self._path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
            os.chmod(final, 0o444)
        return f"sha256:{digest}"

    def _tmp(self) -> tuple[int, Path]:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir)
        return fd, Path(name)

    def put_bytes(self, data: bytes) -> str:
        """Store `data`; returns its id."""
        digest = hashlib.sha256(data).hexdigest()
        if self._path(digest).exists():
            return f"sha256:{digest}"
        fd, tmp = self._tmp()
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return self._commit(tmp, digest)

    def put_file(self, source: Path) -> str:
        """Copy a local file into the store, hashing as it streams; returns its id."""
        hasher = hashlib.sha256()
        fd, tmp = self._tmp()
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return self._commit(tmp, hasher.hexdigest())

    def exists(self, artifact_id: str) -> bool:
        """Whether the artifact is stored."""
        return self._path(_check_id(artifact_id)).is_file()

    def path(self, artifact_id: str, *, verify: bool = False) -> Path:
        """Local path of a stored artifact (read-only), optionally re-hashed first.

        Raises:
            ArtifactError: malformed id, missing artifact, or content that no longer matches.
        """
        digest = _check_id(artifact_id)
        path = self._path(digest)
        if not path.is_file():
            raise ArtifactError(f"no artifact {artifact_id}")
        if verify and file_sha256(path) != digest:
            raise ArtifactError(f"artifact {artifact_id} was altered on disk")
        return path

    def get_bytes(self, artifact_id: str, *, verify: bool = True) -> bytes:
        """Content of a stored artifact, verified against its id by default."""
        data = self.path(artifact_id).read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != _check_id(artifact_id):
            raise ArtifactError(f"artifact {artifact_id} was altered on disk")
        return data


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content, streamed."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
