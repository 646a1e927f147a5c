"""Result downloads: retried when cut or spoiled, refused when expired, capped, keyless."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qwen_image_dashscope.api import DownloadError, ImageEditRequest, TextToImageRequest
from qwen_image_dashscope.api.emulator import Emulator
from qwen_image_dashscope.api.service.download import Downloader
from support.client import FAST_RETRY, api_requests, make_client, png_bytes

T2I = TextToImageRequest("a harbour", seed=9)


def _result_gets(emu):
    return api_requests(emu, "/results/", "GET")


def test_truncated_download_is_retried(emu, client):
    emu.inject("truncate")
    result = client.text_to_image(T2I, interface="sync")
    [image] = result.images
    assert image.data == emu.served_images[image.url]
    gets = _result_gets(emu)
    assert len(gets) == 2 and gets[0].path == gets[1].path


def test_download_never_carries_the_api_key(emu, client):
    client.text_to_image(T2I, interface="sync")
    [get] = _result_gets(emu)
    assert "Authorization" not in get.headers


def test_a_spoiled_body_is_retried_then_refused(emu, client):
    emu.inject("non_json", path="/results/", status=200, body="<html>captive portal</html>")
    result = client.text_to_image(T2I, interface="sync")
    assert result.images[0].data == emu.served_images[result.images[0].url]
    assert len(_result_gets(emu)) == 2

    emu.inject("non_json", path="/results/", status=200, count=10,
               body="<html>captive portal</html>")
    with pytest.raises(DownloadError) as caught:
        client.text_to_image(T2I, interface="sync")
    message = str(caught.value)
    assert "not a valid image" in message and f"after {FAST_RETRY.attempts} attempts" in message
    assert "valid for 24 hours" in message and "/results/" in message


def test_expired_url_gives_a_clear_error():
    with Emulator(latency=0.05, result_ttl=0.3) as emu, make_client(emu) as client:
        url = client.text_to_image(T2I, interface="sync").images[0].url
        time.sleep(0.4)
        before = len(_result_gets(emu))
        with pytest.raises(DownloadError) as caught:
            Downloader(retry=FAST_RETRY).fetch(url)
        assert "has expired" in str(caught.value) and "Request has expired." in str(caught.value)
        assert "last 24 hours" in str(caught.value)
        assert len(_result_gets(emu)) == before + 1  # not retried


def test_missing_result_is_not_retried(emu):
    url = f"{emu.url}/results/{'0' * 32}.png?Expires=1&OSSAccessKeyId=x&Signature=y"
    with pytest.raises(DownloadError) as caught:
        Downloader(retry=FAST_RETRY).fetch(url)
    assert "HTTP 404" in str(caught.value) and "NoSuchKey" in str(caught.value)
    assert len(_result_gets(emu)) == 1


def test_size_cap(emu, client):
    url = client.text_to_image(T2I, interface="sync").images[0].url
    with pytest.raises(DownloadError) as caught:
        Downloader(retry=FAST_RETRY, max_bytes=1000).fetch(url)
    assert "over the 1000-byte cap" in str(caught.value)


def test_six_images_are_downloaded_concurrently(emu, client):
    result = client.edit_image(ImageEditRequest("six", images=(png_bytes(),), n=6))
    assert len(result.images) == 6
    assert all(image.data == emu.served_images[image.url] for image in result.images)
    assert len(_result_gets(emu)) == 6


class _SlowImages(BaseHTTPRequestHandler):
    """Serves one PNG after a pause, to tell concurrent downloads from sequential ones."""

    protocol_version = "HTTP/1.1"
    png = png_bytes(64, 64)

    def do_GET(self):  # noqa: N802 - the base class's name
        time.sleep(0.15)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def log_message(self, *args):
        pass


def test_downloads_of_one_result_run_at_once():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowImages)
    # Its loop notices shutdown() within 0.01 s (by default 0.5 s, waited for at the end).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    try:
        urls = [f"http://127.0.0.1:{server.server_address[1]}/{i}.png" for i in range(6)]
        started = time.monotonic()
        images = Downloader(retry=FAST_RETRY).fetch_all(urls)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert [image.data for image in images] == [_SlowImages.png] * 6
    assert elapsed < 0.45  # one after another would take 0.9 s
