"""Download result images as soon as they exist: their URLs expire 24 hours after generation.

A download is a GET, so every transient failure is retried with the transport's backoff:
connection errors, timeouts, 429/5xx, a body shorter than its Content-Length (a cut
connection) and a body that is not a valid image. The body is streamed with a size cap
and must be an image Pillow can verify (the reference promises PNG). The downloads of one
result run concurrently.

Result URLs point at Alibaba Cloud OSS, not DashScope, so the download session is a
separate one that never carries the API key. Only https URLs are fetched (plain http only
from loopback, and only for a client whose base URL is on loopback too: the emulator),
redirects included; each download, retries included, ends
within ``DOWNLOAD_DEADLINE``; an error answer is quoted in a short sanitised excerpt only.
An image over ``MAX_RESULT_PIXELS`` is kept as sent (its header read, never decoded):
``over_pixel_cap`` tells the caller not to decode it.
"""
from __future__ import annotations

import io
import logging
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from PIL import Image

from .. import images
from ..config import is_loopback
from ..errors import DownloadError, excerpt
from ..images import MAX_RESULT_PIXELS, inspect_image
from ..schema import GeneratedImage
from .retry import Retry, RetryPolicy, retrying
from .transport import CONNECT_TIMEOUT, USER_AGENT, proxies_for, retry_after_seconds

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 64 * 1024 * 1024
READ_TIMEOUT = 60.0
DOWNLOAD_DEADLINE = 180.0  # seconds for one image, every attempt included
MAX_REDIRECTS = 3
_CHUNK = 256 * 1024
_PNG_HEADER = struct.Struct(">8sI4sII")  # signature, IHDR length, "IHDR", width, height


def over_pixel_cap(image: GeneratedImage) -> bool:
    """Whether ``image`` is too large to decode safely (it is stored, not returned)."""
    return images.over_pixel_cap(image.width, image.height)


def check_result_url(url: str, loopback_http: bool = True) -> None:
    """Refuse a result URL that is not https (plain http only to loopback, and only with
    ``loopback_http``: a client whose base URL is itself on loopback, the emulator)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or not host or not (parts.scheme == "https" or (
            loopback_http and parts.scheme == "http" and is_loopback(host))):
        raise DownloadError(f"The result URL {_short(url)!r} is not an https URL; it was not "
                            "fetched.", hint="Check the base URL: DashScope serves results "
                                             "over https only.")


class Downloader:
    def __init__(self, *, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None, max_bytes: int = MAX_IMAGE_BYTES,
                 deadline: float = DOWNLOAD_DEADLINE, loopback_http: bool = True):
        self.loopback_http = loopback_http  # see check_result_url
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy()
        self.max_bytes = max_bytes
        self.deadline = deadline

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

        check_result_url(url, self.loopback_http)
        ends = time.monotonic() + self.deadline
        return retrying(lambda: self._image(url, self._get(url, ends)), self.retry,
                        what=f"download of {_short(url)}", give_up=give_up)

    def _open(self, url: str, ends: float) -> requests.Response:
        """The answer to a GET of ``url``, following at most MAX_REDIRECTS redirects, each
        to a URL ``check_result_url`` accepts."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self.session.get(
                url, stream=True, headers={"User-Agent": USER_AGENT}, allow_redirects=False,
                proxies=proxies_for(url),
                timeout=(CONNECT_TIMEOUT, max(0.1, min(READ_TIMEOUT, ends - time.monotonic()))))
            if not response.is_redirect:
                return response
            url = urljoin(url, response.headers["Location"])
            response.close()
            check_result_url(url, self.loopback_http)
        raise DownloadError(f"The result {_short(url)} redirects more than {MAX_REDIRECTS} "
                            "times; it was not fetched.")

    def _get(self, url: str, ends: float) -> bytes:
        if time.monotonic() >= ends:
            raise DownloadError(f"The download of {_short(url)} did not finish within "
                                f"{self.deadline:g} s.", hint="Check the network; the link "
                                                              "stays valid for 24 hours.")
        try:
            with self._open(url, ends) as response:
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
                # read1 returns what has arrived, so a slow drip still meets the deadline
                read = getattr(response.raw, "read1", None) or response.raw.read
                while chunk := read(_CHUNK, decode_content=True):
                    data.extend(chunk)
                    if len(data) > self.max_bytes:
                        raise DownloadError(
                            f"The result {_short(url)} is over the {self.max_bytes}-byte cap.",
                            hint="This is not a Qwen-Image result; check the base URL.")
                    if time.monotonic() > ends:
                        raise DownloadError(
                            f"The download of {_short(url)} did not finish within "
                            f"{self.deadline:g} s ({len(data)} bytes arrived).",
                            hint="Check the network; the link stays valid for 24 hours.")
        except requests.exceptions.SSLError as exc:
            raise DownloadError(f"TLS to the result host failed ({exc}).",
                                hint="A proxy may be intercepting HTTPS; set REQUESTS_CA_BUNDLE.") \
                from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _retry(f"{type(exc).__name__}: {excerpt(str(exc).encode())}") from None
        if expected is not None and len(data) < expected:
            raise _retry(f"truncated: {len(data)} of {expected} bytes")
        return bytes(data)

    def _refuse(self, url: str, response: requests.Response) -> None:
        status = response.status_code
        text = excerpt(response.raw.read(300, decode_content=True))
        if status == 429 or status >= 500:
            raise _retry(f"HTTP {status}", retry_after_seconds(response))
        if status in (403, 404) and ("expired" in text.lower() or "Expires" in url):
            raise DownloadError(
                f"The result URL {_short(url)} has expired or is no longer valid (HTTP {status}: "
                f"{text}).",
                hint="Result links last 24 hours after generation and the image cannot be "
                     "fetched any more; generate it again (configure a result store so images "
                     "are saved the moment they are made).")
        raise DownloadError(f"The result {_short(url)} could not be downloaded (HTTP {status}: "
                            f"{text}).",
                            hint="Open the link in a browser; if it fails there too, generate "
                                 "the image again.")

    def _image(self, url: str, data: bytes) -> GeneratedImage:
        header = _PNG_HEADER.unpack_from(data) if len(data) >= _PNG_HEADER.size else None
        if header and header[0] == b"\x89PNG\r\n\x1a\n" and header[2] == b"IHDR" \
                and images.over_pixel_cap(header[3], header[4]):
            # Too large to open safely: kept as the service sent it, never decoded.
            log.warning("Result %s is %dx%d, over the %d-pixel cap", _short(url), header[3],
                        header[4], MAX_RESULT_PIXELS)
            return GeneratedImage(data=data, url=url, width=header[3], height=header[4])
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
