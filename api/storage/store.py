"""Every paid image on disk the moment it is downloaded, and reuse of identical requests.

``ResultStore(directory)`` writes each image as ``<day>/<time>_<model>_<id>_<n>.png`` (each
part bounded, so a long custom model id never makes a name too long to write) with
a JSON sidecar of the same name (model, prompts, parameters, seed, request and task ids,
usage, region, times, URL, cost, fingerprint). Both are written to a temporary file and
renamed, so a crash never leaves a half file under the final name. The API key is never
written: the sidecar is built from an explicit list of fields.

``request_fingerprint(request, region)`` hashes everything that determines the output. With
a fixed seed, an identical request gives (nearly) the same image, so ``lookup`` lets the
client serve it from disk instead of paying again. ``index.jsonl`` maps fingerprints to
files; it is append-only, each line is one ``write`` of a complete record, and it is
never opened through a symlink. Reuse takes only files inside the store and within the
pixel cap (``images.MAX_RESULT_PIXELS``); a result with an image over it is not indexed.

``atomic_write`` and ``exclusive_lock`` are the file primitives the spend guard's ledger,
the journal and the learned durations share: every lock file of the pack is opened by
``exclusive_lock`` (0600, never through a symlink).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ..bounds import warn_once
from ..catalog.models import spec_for
from ..errors import ConfigurationError
from ..images import inspect_image, over_pixel_cap
from ..schema import GeneratedImage, GenerationResult
from ..service.wire import resolved

log = logging.getLogger(__name__)

_INDEX = "index.jsonl"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MODEL_NAME_CHARS = 48  # of a file name; a custom model id can be any length
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # the index and lock files: never through a symlink


def request_fingerprint(request, region: str) -> str:
    """SHA-256 over model, region, prompts, parameters and input image bytes.

    Parameters left open count as the model's defaults, so a request and the same one
    with those defaults spelled out match. Only meaningful when ``request.seed`` is set:
    without a seed every call differs.
    """
    request = resolved(request, spec_for(request.model, request.family))
    digest = hashlib.sha256()
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)
              if f.name != "images"}
    fields["family"] = request.family
    fields["region"] = region
    digest.update(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    for image in getattr(request, "images", ()):
        data = image.encode("utf-8") if isinstance(image, str) else bytes(image)
        digest.update(b"\0image\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def describe_inputs(request) -> list[dict]:
    """The sidecar's record of edit inputs: URLs as given, bytes by hash and size only."""
    described = []
    for image in getattr(request, "images", ()):
        if isinstance(image, str) and not image.startswith("data:"):
            described.append({"url": image})
        else:
            data = image.encode("utf-8") if isinstance(image, str) else bytes(image)
            described.append({"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    return described


@dataclass
class StoredImage:
    path: Path
    sidecar_path: Path
    metadata: dict
    data: bytes = field(repr=False)  # as read and checked by ``lookup``


class ResultStore:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.directory)!r})"

    def ensure_writable(self) -> None:
        """Refuse (``ConfigurationError``) a store that cannot be written, before anything
        is paid for: a folder that cannot be created or written to."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise ConfigurationError(
                f"The result folder {self.directory} cannot be written ({exc.strerror or exc}); "
                "nothing was sent.",
                hint="Choose a folder you can write to.") from None

    def save(self, result: GenerationResult, request, *, fingerprint: str | None) -> list[Path]:
        """Write the result's images and their sidecars; return the PNG paths.

        Sets ``saved_path`` on each image. The fingerprint is indexed for reuse only when the
        seed is fixed and every requested image is there.
        """
        now = datetime.datetime.now().astimezone()
        folder = self.directory / now.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        ident = _name_part(result.task_id or result.request_id or "local", 12)
        stem = f"{now.strftime('%H%M%S')}_{_name_part(result.model, MODEL_NAME_CHARS)}_{ident}"
        paths = []
        for index, image in enumerate(result.images, start=1):
            path = _free_name(folder, f"{stem}_{index}")
            atomic_write(path, image.data)
            metadata = _sidecar(result, request, image, index, fingerprint, now)
            atomic_write(path.with_suffix(".json"),
                          json.dumps(metadata, ensure_ascii=False, indent=2).encode("utf-8"))
            image.saved_path = str(path)
            paths.append(path)
        # An image over the pixel cap is kept, never served again: reuse would decode it.
        decodable = not any(over_pixel_cap(image.width, image.height) for image in result.images)
        if fingerprint and request.seed is not None and len(paths) == request.n and decodable:
            record = {"fingerprint": fingerprint, "time": now.isoformat(),
                      "files": [str(p.relative_to(self.directory)) for p in paths]}
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            try:
                self._append_index(line)
            except OSError as exc:  # the images are saved; only reuse is lost
                log.warning("%s cannot be appended to (%s); these images will not be reused",
                            self.directory / _INDEX, exc)
        log.info("Saved %d image(s) to %s", len(paths), folder)
        return paths

    def _append_index(self, line: bytes) -> None:
        with self._lock:
            descriptor = os.open(self.directory / _INDEX,
                                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)

    def lookup(self, fingerprint: str) -> list[StoredImage] | None:
        """The newest complete set of images stored for ``fingerprint``, or None.

        The index is a file anyone with access to the folder may have edited: a record is
        used only when each file it names lies inside the store (symlinks resolved), is an
        image within the pixel cap, and has its sidecar."""
        try:
            descriptor = os.open(self.directory / _INDEX, os.O_RDONLY | _NOFOLLOW)
            with os.fdopen(descriptor, "rb") as handle:
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
                continue
            names = record.get("files")
            stored = [self._stored(name) for name in names] if isinstance(names, list) else []
            if stored and None not in stored:
                return stored
        return None

    def _stored(self, name) -> StoredImage | None:
        """The stored image an index record names, or None (outside the store, missing,
        not an image, over the pixel cap, no readable sidecar)."""
        if not isinstance(name, str) or not name:
            return None
        path = self.directory / name
        sidecar = path.with_suffix(".json")
        try:
            root = self.directory.resolve()
            if not (path.resolve().is_relative_to(root) and sidecar.resolve().is_relative_to(root)):
                log.warning("The store's index names %r, outside %s; not reused", name, root)
                return None
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
            data = path.read_bytes()
            _, width, height = inspect_image(data)
        except (OSError, ValueError):
            return None
        if not isinstance(metadata, dict):
            return None
        if over_pixel_cap(width, height):
            log.warning("%s is %dx%d, over the pixel cap; not reused", path, width, height)
            return None
        return StoredImage(path, sidecar, metadata, data)


def _sidecar(result: GenerationResult, request, image: GeneratedImage, index: int,
             fingerprint: str | None, now: datetime.datetime) -> dict:
    parameters = {name: getattr(request, name) for name in
                  ("size", "n", "prompt_extend", "watermark", "seed")}
    return {
        "model": result.model,
        "region": result.region,
        "interface": result.interface,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "parameters": parameters,
        "seed": request.seed,
        "inputs": describe_inputs(request),
        "orig_prompt": result.orig_prompt,
        "actual_prompt": result.actual_prompt,
        "request_id": result.request_id,
        "task_id": result.task_id,
        "usage": result.usage,
        "submit_time": result.submit_time,
        "scheduled_time": result.scheduled_time,
        "end_time": result.end_time,
        "saved_at": now.isoformat(),
        "url": image.url,
        "width": image.width,
        "height": image.height,
        "index": index,
        "call_cost_usd": result.cost_usd,
        "fingerprint": fingerprint,
        **({"doubt": result.doubt} if result.doubt else {}),
    }


def _name_part(text: str, limit: int) -> str:
    """``text`` as a bounded file-name part: a long one keeps its start and gets a short
    hash of the whole, so names stay unique and under every file system's limit."""
    safe = _SAFE.sub("-", text)
    if len(safe) <= limit:
        return safe
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:limit - 9]}-{digest}"


def _free_name(folder: Path, stem: str) -> Path:
    path, counter = folder / f"{stem}.png", 1
    while path.exists():
        counter += 1
        path = folder / f"{stem}-{counter}.png"
    return path


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename it over ``path``:
    a crash leaves the old file or the new one, never half of one. ``mode``: the new
    file's permissions (default: the temporary file's 0o600 widened by the umask as
    ``open`` would)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".part")
    try:
        if mode is not None:
            os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


@contextlib.contextmanager
def exclusive_lock(path: Path, unusable: Callable[[OSError], Exception]) -> Iterator[None]:
    """Hold ``fcntl.flock`` on the lock file ``path`` (created 0o600, never followed through
    a symlink); ``unusable(error)`` is raised when it cannot be opened. Where ``fcntl`` does
    not exist (Windows) only the caller's thread lock serialises, and a warning says so."""
    if fcntl is None:
        warn_once(("no fcntl", path), "No file locking on this system: processes sharing %s "
                  "may each miss a change of the other", path, logger=log)
        yield
        return
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    except OSError as exc:
        raise unusable(exc) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor drops the lock


def image_from_stored(stored: StoredImage) -> GeneratedImage:
    """The stored image as a result's image; its size read from the file, not the sidecar
    (which anyone with access to the folder may have edited)."""
    data = stored.data
    _, width, height = inspect_image(data)
    url = stored.metadata.get("url")
    return GeneratedImage(data=data, url=url if isinstance(url, str) else "", width=width,
                          height=height, saved_path=str(stored.path))

