"""Download result images as soon as they exist: their URLs expire 24 hours after generation.

A download is a GET, so every transient failure is retried with the transport's backoff:
connection errors, timeouts, 429/5xx, a body shorter than its Content-Length (a cut
connection) and a body that is not a valid image. The body is streamed with a size cap
and must be an image Pillow can verify (the reference promises PNG). The downloads of one
result run concurrently.

Result URLs point at Alibaba Cloud OSS, not DashScope, so the download session is a
separate one that never carries the API key.
"""
from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor

import requests
from PIL import Image

from .errors import DownloadError, redact
from .images import inspect_image
from .schema import GeneratedImage
from .retry import Retry, RetryPolicy, retrying
from .transport import CONNECT_TIMEOUT, USER_AGENT, retry_after_seconds

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 64 * 1024 * 1024
READ_TIMEOUT = 60.0
_CHUNK = 256 * 1024


class Downloader:
    def __init__(self, *, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None, max_bytes: int = MAX_IMAGE_BYTES):
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy()
        self.max_bytes = max_bytes

    def fetch_all(self, urls: list[str]) -> list[GeneratedImage | DownloadError]:
        """Every URL at once; each item is the image or the ``DownloadError`` it ended with."""
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=min(6, len(urls)),
                                thread_name_prefix="qwen-image-download") as pool:
            return list(pool.map(self._fetch_or_error, urls))

    def _fetch_or_error(self, url: str) -> GeneratedImage | DownloadError:
        try:
            return self.fetch(url)
        except DownloadError as exc:
            return exc

    def fetch(self, url: str) -> GeneratedImage:
        def give_up(reason: Exception, attempts: int) -> DownloadError:
            return DownloadError(
                f"Could not download the result image {_short(url)} after {attempts} attempts "
                f"({reason}).",
                hint="The link stays valid for 24 hours after generation: open it in a browser "
                     f"to save the image ({url}).")

        return retrying(lambda: self._image(url, self._get(url)), self.retry,
                        what=f"download of {_short(url)}", give_up=give_up)

    def _get(self, url: str) -> bytes:
        try:
            with self.session.get(url, stream=True, headers={"User-Agent": USER_AGENT},
                                  timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as response:
                status = response.status_code
                if status != 200:
                    self._refuse(url, response)
                expected = response.headers.get("Content-Length")
                expected = int(expected) if expected and expected.isdigit() else None
                if expected is not None and expected > self.max_bytes:
                    raise DownloadError(
                        f"The result {_short(url)} is {expected} bytes, over the "
                        f"{self.max_bytes}-byte cap.",
                        hint="This is not a Qwen-Image result; check the base URL.")
                data = bytearray()
                for chunk in response.iter_content(_CHUNK):
                    data.extend(chunk)
                    if len(data) > self.max_bytes:
                        raise DownloadError(
                            f"The result {_short(url)} is over the {self.max_bytes}-byte cap.",
                            hint="This is not a Qwen-Image result; check the base URL.")
        except requests.exceptions.SSLError as exc:
            raise DownloadError(f"TLS to the result host failed ({exc}).",
                                hint="A proxy may be intercepting HTTPS; set REQUESTS_CA_BUNDLE.") \
                from None
        except requests.RequestException as exc:
            raise _retry(f"{type(exc).__name__}: {exc}") from None
        if expected is not None and len(data) < expected:
            raise _retry(f"truncated: {len(data)} of {expected} bytes")
        return bytes(data)

    def _refuse(self, url: str, response: requests.Response) -> None:
        status = response.status_code
        text = " ".join(redact(response.content[:300].decode("utf-8", "replace")).split())
        if status == 429 or status >= 500:
            raise _retry(f"HTTP {status}", retry_after_seconds(response))
        if status in (403, 404) and ("expired" in text.lower() or "Expires" in url):
            raise DownloadError(
                f"The result URL {_short(url)} has expired or is no longer valid (HTTP {status}: "
                f"{text[:160]}).",
                hint="Result links last 24 hours after generation and the image cannot be "
                     "fetched any more; generate it again (configure a result store so images "
                     "are saved the moment they are made).")
        raise DownloadError(f"The result {_short(url)} could not be downloaded (HTTP {status}: "
                            f"{text[:160]}).",
                            hint="Open the link in a browser; if it fails there too, generate "
                                 "the image again.")

    def _image(self, url: str, data: bytes) -> GeneratedImage:
        try:
            fmt, width, height = inspect_image(data)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # checks the structure and checksums without decoding pixels
        except Exception as exc:  # Pillow raises many types for damaged files
            # Retried: a proxy or a cut connection can spoil one download of a good image.
            raise _retry(f"not a valid image: {exc}") from None
        if fmt != "PNG":
            log.info("Result %s is %s, not the PNG the reference describes", _short(url), fmt)
        return GeneratedImage(data=data, url=url, width=width, height=height)


def _retry(reason: str, retry_after: float | None = None) -> Retry:
    """A failure worth another attempt (``fetch`` words the error if none is left)."""
    return Retry(ValueError(reason), retry_after)


def _short(url: str) -> str:
    # Signed OSS URLs carry long query strings; the path names the image well enough.
    return url.split("?", 1)[0]
