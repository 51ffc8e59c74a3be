"""Outputs to S3-compatible storage (AWS S3, MinIO, R2, Ceph, moto...).

    store = S3Store("my-bucket", prefix="atelier", endpoint_url=None, region="eu-west-1")
    store.check()                                   # at start-up: bucket and credentials
    url = store.upload(Path("out/00001-42.png"), "task-7", {"seed": 42, "model": "sd15"})

Credentials come only from the standard AWS chain (environment, shared config and
credentials files, SSO, container and instance roles), never from arguments or
flags, and are never logged: a server's command line and logs are often visible to
people who must not hold its keys.

Objects are named `<prefix>/<task>/<file name>`, stored with their content type
(image/png, video/mp4, application/json, ...) and user metadata (`task-id`, `seed`,
`model`, ...). `upload` returns the object's URL, or a presigned GET URL valid
`presign_seconds` when that is set (a private bucket's objects can then be fetched
by whoever holds the URL, until it expires).

Failures: transient ones (connection refused or reset, timeouts, 5xx, throttling)
are retried with exponential backoff; the final failure, and any permanent one
(no such bucket, access denied, no credentials), raises StorageError naming the
object and the reason, and the local file is left where it was: nothing is lost.
`UploadingRunner` wraps a job runner so uploads happen in the job's own thread,
after its files are saved: an upload failure ends the job with an `error` event
(the task is `failed` with the reason), and a success puts the URLs on
`result.urls`, which status.outputs_of prefers over local paths.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import AtelierError

log = logging.getLogger(__name__)
__all__ = ["S3Store", "StorageError", "UploadingRunner", "content_type"]

CONTENT_TYPES = {".png": "image/png", ".mp4": "video/mp4", ".json": "application/json",
                 ".webp": "image/webp", ".gif": "image/gif", ".zip": "application/zip",
                 ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".txt": "text/plain"}  # fmt: skip
TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
                   "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ThrottlingException",
                   "RequestLimitExceeded"}  # fmt: skip
NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                  "AWS_PROFILE, ~/.aws/credentials, or run with an instance or container role "
                  "(Atelier never takes credentials from flags)")  # fmt: skip
_META_KEY = re.compile(r"[^a-z0-9-]+")


class StorageError(AtelierError):
    """An output could not be stored; the message names the object and the reason.
    The local file is kept."""


def content_type(path: Path) -> str:
    """The Content-Type an output is stored with."""
    return CONTENT_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def _metadata(task_id: str, metadata: dict[str, Any] | None) -> dict[str, str]:
    """S3 user metadata travels in HTTP headers: lower-case keys, ASCII values."""
    out = {"task-id": task_id}
    for k, v in (metadata or {}).items():
        if v is None:
            continue
        key = _META_KEY.sub("-", str(k).lower().replace("_", "-")).strip("-")
        out[key] = str(v).encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")
    return out


class S3Store:
    """One bucket (and key prefix) that outputs are uploaded to. Thread-safe: boto3
    clients may be shared between threads; the store keeps no other state."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        presign_seconds: int = 0,
        attempts: int = 4,
        backoff_s: tuple[float, float] = (0.5, 8.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise StorageError("s3_bucket: a bucket name is needed")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.presign_seconds = int(presign_seconds)
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._sleep = sleep  # tests pass a recorder: no real waiting
        self._session = boto3.session.Session(region_name=region or None)
        config = Config(
            retries={"max_attempts": 1, "mode": "standard"},  # our own loop retries (and logs)
            connect_timeout=5,
            read_timeout=60,
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self.client = self._session.client("s3", endpoint_url=self.endpoint_url, config=config)

    @classmethod
    def from_settings(cls, values: dict[str, Any], saves: bool = True) -> S3Store | None:
        """The store the settings ask for (`s3_*`), checked now (start-up), or None when
        s3_bucket is empty. Any problem is a RequestError naming `s3_bucket` with one
        line saying what to fix: a missing bucket, no access, no credentials, or
        `saves` False (nothing is saved to upload: outputs_dir off and no --out)."""
        from .errors import RequestError

        bucket = str(values.get("s3_bucket") or "").strip()
        if not bucket:
            return None
        if not saves:
            raise RequestError("s3_bucket", "uploads saved outputs, but outputs_dir is off: "
                               "set outputs_dir (or --out) or leave s3_bucket empty")  # fmt: skip
        try:
            store = cls(bucket, str(values.get("s3_prefix") or ""),
                        values.get("s3_endpoint_url") or None, values.get("s3_region") or None,
                        int(values.get("s3_presign_seconds") or 0))  # fmt: skip
            store.check()
        except StorageError as e:
            raise RequestError("s3_bucket", str(e)) from None
        except ValueError as e:  # e.g. an endpoint URL botocore cannot read
            raise RequestError("s3_endpoint_url", str(e)) from None
        return store

    def __repr__(self) -> str:  # never the credentials
        return f"S3Store({self.bucket!r}, prefix={self.prefix!r}, endpoint={self.where})"

    @property
    def where(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.client.meta.region_name})"

    # -- 1. start-up check -------------------------------------------------------
    def check(self) -> None:
        """Fail early, with a message saying what to fix, when the credentials are
        missing, the bucket does not exist or cannot be reached or written."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self._session.get_credentials() is None:
            raise StorageError(NO_CREDENTIALS)
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError as e:
            raise StorageError(NO_CREDENTIALS) from e
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                raise StorageError(f"S3 bucket '{self.bucket}' does not exist at {self.where} "
                                   "(NoSuchBucket): create it or fix s3_bucket") from e  # fmt: skip
            if code in ("403", "AccessDenied"):
                raise StorageError(f"access to S3 bucket '{self.bucket}' at {self.where} is "
                                   "denied: check the credentials' policy") from e  # fmt: skip
            raise StorageError(f"S3 bucket '{self.bucket}' at {self.where}: {e}") from e
        except BotoCoreError as e:
            raise StorageError(f"cannot reach S3 at {self.where}: {e}") from e

    # -- 2. uploads ----------------------------------------------------------------
    def key_for(self, path: Path, task_id: str) -> str:
        return "/".join(p for p in (self.prefix, task_id, path.name) if p)

    def upload(self, path: str | Path, task_id: str, metadata: dict[str, Any] | None = None) -> str:
        """Upload one output file; its URL (presigned if presign_seconds is set).
        Raises StorageError after the last attempt; the local file is never touched."""
        path = Path(path)
        key = self.key_for(path, task_id)
        data = path.read_bytes()
        meta = _metadata(task_id, metadata)
        args = {"Bucket": self.bucket, "Key": key, "Body": data,
                "ContentType": content_type(path), "Metadata": meta}  # fmt: skip
        for attempt in range(1, self.attempts + 1):
            try:
                self.client.put_object(**args)
                return self.url(key)
            except Exception as e:  # sorted below: transient ones are retried
                reason = _reason(e)
                if not _transient(e) or attempt == self.attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise StorageError(f"could not upload {path} to s3://{self.bucket}/{key} at "
                                       f"{self.where}{tries}: {reason}; the file is kept "
                                       "locally") from e  # fmt: skip
                wait = min(self.backoff_s[0] * 2 ** (attempt - 1), self.backoff_s[1])
                log.warning("upload of %s failed (%s): attempt %d of %d in %.1f s",
                            path.name, reason, attempt + 1, self.attempts, wait)  # fmt: skip
                self._sleep(wait)
        raise AssertionError("unreachable")

    def url(self, key: str) -> str:
        """A presigned GET URL when presign_seconds is set, else the object's plain URL."""
        if self.presign_seconds > 0:
            return str(self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=self.presign_seconds))  # fmt: skip
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.bucket}/{quote(key)}"
        region = self.client.meta.region_name
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{quote(key)}"

    def upload_result(self, result: Any, task_id: str, model: str | None = None) -> list[str]:
        """Upload every saved file of a GenerationResult (`paths`, with the seed of each)."""
        seeds = list(getattr(result, "seeds", []) or [])
        request = getattr(result, "request", None)
        model = model or getattr(request, "model", None)
        urls = []
        for i, path in enumerate(getattr(result, "paths", None) or []):
            seed = seeds[i] if i < len(seeds) else getattr(result, "seed", None)
            urls.append(self.upload(path, task_id, {"seed": seed, "model": model}))
        return urls


def _reason(e: BaseException) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', '?')}: {err.get('Message', '') or type(e).__name__}"
    return str(e) or type(e).__name__


def _transient(e: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(e, ConnectionError | HTTPClientError):
        return True
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_CODES or int(status or 0) >= 500
    return False


class UploadingRunner:
    """A job runner whose results' saved files are uploaded before the job ends.

    Wraps any runner (ImageRunner; VideoRunner results carry no saved files, the
    front end uploads those with S3Store.upload). The upload runs in the job's own
    thread, so JobQueue listeners see `result` only once the objects exist, and an
    upload failure (StorageError) ends the job as `error`. `name(job)` names the
    task in object keys: pass RedisReporter.task_name so Redis and S3 agree; by
    default the job's `task_id`, else `<instance>-<job id>` (unique per process)."""

    def __init__(self, inner: Any, store: S3Store, name: Callable[[Any], str] | None = None):
        self.inner = inner
        self.kind = inner.kind
        self.store = store
        self._instance = uuid.uuid4().hex[:12]
        self.name = name or self._default_name

    def _default_name(self, job: Any) -> str:
        return getattr(job, "task_id", None) or f"{self._instance}-{job.id}"

    def prepare(self, spec: Any) -> Any:
        return self.inner.prepare(spec)

    def run(self, prepared: Any, ctx: Any) -> Any:
        result = self.inner.run(prepared, ctx)
        if getattr(result, "paths", None):
            result.urls = self.store.upload_result(result, self.name(ctx.job), prepared.model)
        return result
