"""Storage of a job's inputs and result: a local folder, or any S3-compatible object store.

Both keep the same layout, relative to their root (a folder, or a bucket and key prefix):
``jobs/<job_id>/input.<name>`` and ``jobs/<job_id>/result.<attempt>.mp4``. Names are built only
from validated job ids and a fixed set of input names, never from user text, so no request can
reach a file outside the root.

:class:`LocalStorage` keeps the files in the data folder (one host, or a folder shared by every
host). :class:`S3Storage` keeps them in a bucket (AWS S3, MinIO, Ceph, Cloudflare R2, ...): the
API uploads the inputs there, a worker downloads them to a local cache while it runs a job and
uploads the video it made, and clients download results straight from the store through
presigned URLs. :func:`make_storage` picks one from the settings (``ECHOMIMIC_S3_BUCKET``).

Both offer the same methods, which are all the API, the workers and the clean-up use:
``save_input``, ``path`` (a local file to read), ``result_path`` (a local file to write),
``relative`` (the stored name of a written result; for S3 this uploads it), ``exists``,
``delete_job``, ``iter_jobs``, ``writable``; ``remote`` tells whether results are served by
presigned URLs (``presigned_url``) instead of from a local file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from ..errors import InvalidOption

if TYPE_CHECKING:  # pragma: no cover
    from .settings import Settings

log = logging.getLogger("echomimic.service.storage")

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
INPUT_NAMES = ("image", "audio", "video", "pose", "persona")   # pose: echomimic.pose/1 JSON/NPZ
#: every stored name: an input or the result of one run of a job
_STORED_NAME = re.compile(r"^jobs/([0-9a-f]{32})/(input\.(?:image|audio|video|pose|persona)|result\.[0-9]{1,6}\.(?:mp4|webm|mov|gif))$")


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def _result_ext(ext: str) -> str:
    ext = str(ext or "mp4").lower()
    if ext not in ("mp4", "webm", "mov", "gif"):
        raise ValueError(f"not an output format: {ext!r}")
    return ext


def _media_type(relative: str) -> str:
    """The HTTP media type of a stored result, from its extension."""
    from ..media.writer import MEDIA_TYPES

    return MEDIA_TYPES.get(str(relative).rsplit(".", 1)[-1].lower(), "video/mp4")


def check_relative(relative: str) -> str:
    """``relative`` if it is a name this storage could have made, else ``ValueError``."""
    rel = str(relative).replace(os.sep, "/")
    if not _STORED_NAME.match(rel):
        raise ValueError(f"not a stored file name: {relative!r}")
    return rel


class Storage(Protocol):
    """What the API, the workers and the clean-up need from a storage."""

    remote: bool

    def save_input(self, job_id: str, name: str, data: bytes) -> str: ...
    def path(self, relative: str) -> Path: ...
    def result_path(self, job_id: str, attempt: int, ext: str = "mp4") -> Path: ...
    def relative(self, path: Path) -> str: ...
    def exists(self, relative: str) -> bool: ...
    def delete_job(self, job_id: str) -> None: ...
    def iter_jobs(self) -> Iterator[tuple[str, float]]: ...
    def writable(self) -> bool: ...


# ------------------------------------------------------------------------------------------------
# local folder
# ------------------------------------------------------------------------------------------------


class LocalStorage:
    """Files of jobs in a local folder (shared by the API and the workers of one host)."""

    remote = False

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / _check_job_id(job_id)

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

    def result_path(self, job_id: str, attempt: int, ext: str = "mp4") -> Path:
        """Where run ``attempt`` of a job writes its video (one file per attempt, so a worker
        that lost its lease never overwrites the result of the run that kept it); ``ext`` is
        the output format (mp4, webm, mov, gif)."""
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"result.{int(attempt)}.{_result_ext(ext)}"

    def relative(self, path: Path) -> str:
        """The stored name of a file under the root."""
        return str(Path(path).resolve().relative_to(self.root))

    def exists(self, relative: str) -> bool:
        """Whether a stored file is there."""
        try:
            return self.path(relative).is_file()
        except ValueError:
            return False

    def delete_job(self, job_id: str) -> None:
        """Remove every file of a job (nothing happens when there is none)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def iter_jobs(self) -> Iterator[tuple[str, float]]:
        """``(job_id, newest modification time)`` of every job folder."""
        jobs = self.root / "jobs"
        for folder in jobs.iterdir() if jobs.is_dir() else ():
            if not (folder.is_dir() and _JOB_ID.match(folder.name)):
                continue
            try:
                times = [folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()]
            except FileNotFoundError:            # removed meanwhile
                continue
            yield folder.name, max(times)

    def writable(self) -> bool:
        """Whether a file can be written in the folder (readiness check)."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                return True
        except OSError:
            return False


# ------------------------------------------------------------------------------------------------
# S3-compatible object store
# ------------------------------------------------------------------------------------------------


class S3Storage:
    """Files of jobs in an S3 bucket (any S3-compatible store, chosen by ``endpoint_url``).

    Objects are named ``<prefix>jobs/<job_id>/...``. Credentials come from boto3's usual sources
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance or pod role).
    ``cache_dir`` holds the local copies a worker reads and writes while it runs a job; a job's
    copies are removed when its result is uploaded, and any left over are removed after
    ``cache_max_age`` seconds.
    """

    remote = True

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None,
                 cache_dir: str | os.PathLike | None = None, cache_max_age: float = 6 * 3600):
        if not bucket or not re.fullmatch(r"[A-Za-z0-9._-]{3,63}", bucket):
            raise InvalidOption(f"not an S3 bucket name: {bucket!r}")
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(signature_version="s3v4", retries={"max_attempts": 4, "mode": "standard"},
                            s3={"addressing_style": "path"} if endpoint_url else {})
            client = boto3.client("s3", endpoint_url=endpoint_url or None,
                                  region_name=region or None, config=config)
        self.client = client
        base = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "echomimic-s3-cache"
        self.cache = base.resolve()
        (self.cache / "jobs").mkdir(parents=True, exist_ok=True)
        self.cache_max_age = float(cache_max_age)

    # -- names ------------------------------------------------------------------------------------

    def key(self, relative: str) -> str:
        """The object key of a stored name."""
        return self.prefix + check_relative(relative)

    def _job_prefix(self, job_id: str) -> str:
        return f"{self.prefix}jobs/{_check_job_id(job_id)}/"

    def _local(self, relative: str) -> Path:
        return self.cache / check_relative(relative)

    # -- the storage interface --------------------------------------------------------------------

    def save_input(self, job_id: str, name: str, data: bytes) -> str:
        """Upload one input; returns its stored name."""
        if name not in INPUT_NAMES:
            raise ValueError(f"not an input name: {name!r}")
        rel = f"jobs/{_check_job_id(job_id)}/input.{name}"
        self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data)
        return rel

    def path(self, relative: str) -> Path:
        """A local copy of a stored file (downloaded into the cache on first use).

        Raises ``FileNotFoundError`` when the object does not exist.
        """
        local = self._local(relative)
        if local.is_file():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".download-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self.key(relative), tmp)
            os.replace(tmp, local)
        except Exception as exc:
            Path(tmp).unlink(missing_ok=True)
            if _is_missing(exc):
                raise FileNotFoundError(f"no stored object {self.key(relative)!r}") from None
            raise
        return local

    def result_path(self, job_id: str, attempt: int, ext: str = "mp4") -> Path:
        """A local file for run ``attempt`` of a job to write its video to (uploaded by
        :meth:`relative`)."""
        self._prune_cache()
        local = self._local(f"jobs/{_check_job_id(job_id)}/result.{int(attempt)}."
                            f"{_result_ext(ext)}")
        local.parent.mkdir(parents=True, exist_ok=True)
        return local

    def relative(self, path: Path) -> str:
        """Upload a finished result written at a :meth:`result_path` and return its stored
        name; the job's local copies are then removed from the cache."""
        local = Path(path).resolve()
        try:
            rel = check_relative(str(local.relative_to(self.cache)))
        except ValueError:
            raise ValueError(f"not a file of the storage cache: {path!s}") from None
        if local.is_file():
            self.client.upload_file(str(local), self.bucket, self.key(rel),
                                    ExtraArgs={"ContentType": _media_type(rel)})
            shutil.rmtree(local.parent, ignore_errors=True)
        return rel

    def exists(self, relative: str) -> bool:
        """Whether the object is in the bucket."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
            return True
        except ValueError:
            return False
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise

    def delete_job(self, job_id: str) -> None:
        """Delete every object of a job, and its local copies."""
        keys = [o["Key"] for o in self._objects(self._job_prefix(job_id))]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        shutil.rmtree(self.cache / "jobs" / job_id, ignore_errors=True)

    def iter_jobs(self) -> Iterator[tuple[str, float]]:
        """``(job_id, newest modification time)`` of every job with objects in the bucket."""
        newest: dict[str, float] = {}
        start = len(self.prefix) + len("jobs/")
        for obj in self._objects(f"{self.prefix}jobs/"):
            job_id = obj["Key"][start:].split("/", 1)[0]
            if _JOB_ID.match(job_id):
                t = obj["LastModified"].timestamp()
                newest[job_id] = max(t, newest.get(job_id, t))
        yield from newest.items()

    def writable(self) -> bool:
        """Whether the bucket answers (readiness check: one ``HeadBucket`` request)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception:  # any client, network or credential problem means not ready
            return False

    def presigned_url(self, relative: str, expires_in: float, filename: str | None = None) -> str:
        """A URL that downloads the object without credentials for ``expires_in`` seconds."""
        params = {"Bucket": self.bucket, "Key": self.key(relative),
                  "ResponseContentType": _media_type(relative)}
        if filename:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
            params["ResponseContentDisposition"] = f'attachment; filename="{safe}"'
        return self.client.generate_presigned_url("get_object", Params=params,
                                                  ExpiresIn=max(1, int(expires_in)))

    # -- helpers ----------------------------------------------------------------------------------

    def _objects(self, prefix: str) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", ())

    def _prune_cache(self) -> None:
        """Remove local copies of jobs untouched for ``cache_max_age`` seconds."""
        limit = time.time() - self.cache_max_age
        for folder in (self.cache / "jobs").iterdir():
            try:
                if folder.is_dir() and folder.stat().st_mtime < limit:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue


def _is_missing(exc: Exception) -> bool:
    """Whether a botocore error means 'no such object'."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def make_storage(settings: "Settings") -> LocalStorage | S3Storage:
    """The storage the settings name: S3 when ``s3_bucket`` is set, else the data folder."""
    bucket = getattr(settings, "s3_bucket", "")
    if bucket:
        return S3Storage(bucket, prefix=settings.s3_prefix,
                         endpoint_url=settings.s3_endpoint_url or None,
                         region=settings.s3_region or None,
                         cache_dir=Path(settings.data_dir) / "s3-cache")
    return LocalStorage(settings.data_dir)
