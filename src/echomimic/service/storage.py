"""Local storage of a job's inputs and result, under the data folder.

Layout: ``<root>/jobs/<job_id>/input.<name>`` and ``<root>/jobs/<job_id>/result.mp4``. Names are
built only from validated job ids and a fixed set of input names, never from user text, so no
request can reach a path outside the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
INPUT_NAMES = ("image", "audio", "video")


class LocalStorage:
    """Files of jobs in a local folder (shared by the API and the workers of one host)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / "jobs" / job_id

    def save_input(self, job_id: str, name: str, data: bytes) -> str:
        """Store one input (written atomically); returns its path relative to the root."""
        if name not in INPUT_NAMES:
            raise ValueError(f"not an input name: {name!r}")
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"input.{name}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return str(target.relative_to(self.root))

    def path(self, relative: str) -> Path:
        """The absolute path of a stored file (refuses anything outside the root)."""
        p = (self.root / relative).resolve()
        if self.root not in p.parents:
            raise ValueError(f"outside the storage folder: {relative!r}")
        return p

    def result_path(self, job_id: str, attempt: int) -> Path:
        """Where run ``attempt`` of a job writes its video (one file per attempt, so a worker
        that lost its lease never overwrites the result of the run that kept it)."""
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"result.{int(attempt)}.mp4"

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def writable(self) -> bool:
        """Whether a file can be written in the folder (readiness check)."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                return True
        except OSError:
            return False
