"""Issue 11 hardening against the emulator over loopback: the ledger never costs an image,
local failures release their booking, nothing leaks, nothing is unbounded."""
import dataclasses
import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qwen_image_dashscope.api import (
    Config,
    ConfigurationError,
    ImageEditRequest,
    InvalidParameterError,
    QwenImageClient,
    ResultStore,
    TextToImageRequest,
    ValidationError,
    errors as errors_module,
)
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY
from qwen_image_dashscope.api.errors import DownloadError, QwenImageError, redact
from qwen_image_dashscope.api.schema import GeneratedImage, GenerationResult
from qwen_image_dashscope.api.service.download import Downloader, check_result_url
from qwen_image_dashscope.api.service.retry import RetryPolicy
from qwen_image_dashscope.api.service.transport import task_path
from qwen_image_dashscope.api.storage.budget import SpendGuard
from support.client import (
    ASYNC_PATH,
    FAST_RETRY,
    SG,
    SYNC_PATH,
    api_requests,
    make_client,
    png_bytes,
    wait_until,
)


def guarded_client(emu, tmp_path, **options):
    ledger = tmp_path / "ledger.json"
    config = Config.resolve(SG, api_key=SINGAPORE_KEY, base_url=emu.base_url(SG),
                            environ={"HOME": str(tmp_path)})
    guard = SpendGuard(images_per_day=10, path=ledger)
    return QwenImageClient(config, retry=FAST_RETRY, budget=guard, **options), guard, ledger


# -- 1. the budget ledger never costs an image ----------------------------------------------


# The call takes 0.3 s: the ledger is broken within milliseconds of the request's arrival.
@pytest.mark.parametrize("emulator", [{"latency": 0.3}], indirect=True)
def test_a_ledger_broken_after_the_answer_still_stores_the_image(emulator, tmp_path):
    store = ResultStore(tmp_path / "results")
    client, guard, ledger = guarded_client(emulator, tmp_path, store=store)

    def break_the_ledger():  # once the billed request is out, the ledger goes bad
        wait_until(lambda: api_requests(emulator, SYNC_PATH), timeout=10)
        ledger.write_text(json.dumps({"version": 1, "days": {"2026-01-01": {
            "images": float("nan"), "usd": 0.0}}}))

    breaker = threading.Thread(target=break_the_ledger)
    breaker.start()
    with client:
        result = client.text_to_image(TextToImageRequest("a lighthouse"), interface="sync")
    breaker.join()

    [image] = result.images
    assert image.saved_path and open(image.saved_path, "rb").read() == image.data
    assert any("ledger could not record this call" in note and "cannot be trusted" in note
               for note in result.notes)


@pytest.mark.parametrize("contents, problem", [
    ({"images": float("nan"), "usd": 0.0}, "images = nan"),
    ({"images": 1, "usd": -0.5}, "usd = -0.5"),
    ({"images": "3", "usd": 0.0}, "images = '3'"),
    ({"images": True, "usd": 0.0}, "images = True"),
    ({"images": 1, "usd": float("inf")}, "usd = inf"),
    ([1, 2], "is list"),
])
def test_odd_ledger_contents_are_a_clear_error_never_zero(tmp_path, contents, problem):
    ledger = tmp_path / "ledger.json"
    ledger.write_text(json.dumps({"version": 1, "days": {"2026-01-01": contents}}))
    before = ledger.read_text()
    guard = SpendGuard(images_per_day=5, path=ledger)

    with pytest.raises(ConfigurationError) as caught:
        guard.reserve("qwen-image-plus", 1, 0.03)

    assert "cannot be trusted" in str(caught.value) and problem in str(caught.value)
    assert "Nothing was sent" in str(caught.value)
    assert ledger.read_text() == before  # untouched, not reset


def test_the_ledger_lock_is_never_followed_through_a_symlink(tmp_path):
    target = tmp_path / "victim"
    ledger = tmp_path / "ledger.json"
    (tmp_path / "ledger.json.lock").symlink_to(target)

    with pytest.raises(ConfigurationError, match="cannot be used"):
        SpendGuard(images_per_day=5, path=ledger).reserve("qwen-image-plus", 1, 0.03)

    assert not target.exists()


def test_an_unencodable_prompt_is_refused_before_sending_and_releases(emu, tmp_path):
    client, guard, _ = guarded_client(emu, tmp_path)
    with client, pytest.raises(ValidationError) as caught:
        client.text_to_image(TextToImageRequest("a cat \ud800 on a mat"))

    assert "may have been" not in str(caught.value)
    assert not [r for r in emu.requests if r.method == "POST"]
    assert guard.status().images_used == 0


def test_a_truncated_input_image_is_refused_before_sending_and_releases(emu, tmp_path):
    noise = Image.frombytes("RGB", (1500, 1500), np.random.default_rng(1).bytes(1500 * 1500 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)  # large enough to need re-encoding
    truncated = buffer.getvalue()[: len(buffer.getvalue()) * 3 // 4]
    client, guard, _ = guarded_client(emu, tmp_path)

    with client, pytest.raises(ValidationError) as caught:
        client.edit_image(ImageEditRequest("blue", images=(truncated,)))

    assert "cannot be decoded" in str(caught.value) and "may have been" not in str(caught.value)
    assert not [r for r in emu.requests if r.method == "POST"]
    assert guard.status().images_used == 0


@pytest.mark.parametrize("content", [b"sk-abc\ndef-ghi", b"\xff\xfe\x00binary", b"sk key"])
def test_a_malformed_key_file_is_one_clear_error_and_nothing_is_sent(emu, tmp_path, content):
    (tmp_path / "key").write_bytes(content)
    config = Config.resolve(SG, base_url=emu.base_url(SG),
                            environ={"HOME": str(tmp_path),
                                     "DASHSCOPE_API_KEY_FILE_PATH": str(tmp_path / "key")})
    guard = SpendGuard(images_per_day=10, path=tmp_path / "ledger.json")
    with QwenImageClient(config, budget=guard) as client, \
            pytest.raises(ConfigurationError) as caught:
        client.text_to_image(TextToImageRequest("a cat"))

    message = str(caught.value)
    assert f"file {tmp_path / 'key'}" in message and "\n" not in message
    assert "may have been" not in message and "abc" not in message
    assert emu.requests == []
    assert guard.status().images_used == 0


def test_a_long_custom_model_name_never_stops_the_image_from_being_stored(tmp_path):
    store = ResultStore(tmp_path)
    model = "my-fine-tuned-" + "x" * 400
    result = GenerationResult(images=[GeneratedImage(png_bytes(64, 64), "https://r/1.png", 64,
                                                     64)], model=model, region=SG,
                              interface="sync", task_id="t" * 300)

    [path] = store.save(result, TextToImageRequest("a cat", model=model), fingerprint=None)

    assert path.exists() and len(path.name) < 120
    assert json.loads(path.with_suffix(".json").read_text())["model"] == model
    again = store.save(result, TextToImageRequest("a cat", model=model), fingerprint=None)
    assert again[0] != path  # still unique


# -- 2. nothing leaked ---------------------------------------------------------------------------


class OneAnswerServer:
    """A loopback HTTP server answering every GET with ``status``, ``headers`` and
    ``body``; ``drip`` sends the body one byte at a time this many seconds apart."""

    def __init__(self, status=200, body=b"", headers=(), drip=0.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/r.png"
        self.answer = (status, body, headers, drip)
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(connection,), daemon=True).start()

    def _one(self, connection):
        import time

        status, body, headers, drip = self.answer
        with connection:
            connection.recv(65536)
            head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "Connection: close\r\n\r\n"
            try:
                connection.sendall(head.encode())
                if not drip:
                    connection.sendall(body)
                for byte in (body if drip else b""):
                    connection.sendall(bytes([byte]))
                    time.sleep(drip)
            except OSError:
                return


def test_a_plain_http_loopback_base_url_bypasses_the_environment_proxy(emu, monkeypatch,
                                                                       tmp_path):
    proxy = OneAnswerServer()  # a stand-in proxy: it counts connections
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url.rsplit("/", 1)[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    with make_client(emu, store=ResultStore(tmp_path)) as client:
        result = client.text_to_image(TextToImageRequest("a cat"))

    assert result.images and proxy.connections == 0


def test_a_session_with_a_proxy_is_refused_for_a_plain_http_base_url(emu):
    import requests

    session = requests.Session()
    session.proxies = {"http": "http://proxy.example:3128"}
    config = Config.resolve(SG, api_key=SINGAPORE_KEY, base_url=emu.base_url(SG), environ={})
    with pytest.raises(ConfigurationError, match="in clear"):
        QwenImageClient(config, session=session)


@pytest.mark.parametrize("url", ["https://alice:s3cr3t-pw@dashscope.example/api/v1",
                                 "http://alice:s3cr3t-pw@127.0.0.1:1/api/v1",
                                 "ftp://alice:s3cr3t-pw@host/api/v1"])
def test_credentials_in_a_base_url_are_refused_and_never_printed(url):
    with pytest.raises(ConfigurationError) as caught:
        Config.resolve(SG, api_key=SINGAPORE_KEY, base_url=url, environ={})
    assert "s3cr3t-pw" not in str(caught.value) and "alice" not in str(caught.value)
    assert "***@" in str(caught.value)


def test_the_configured_key_is_redacted_whatever_its_shape(emu):
    odd_key = "Custom_Gateway.Token+12345678"
    config = Config.resolve(SG, api_key=odd_key, base_url=emu.base_url(SG), environ={})
    emu.inject("http_error", status=400, code="InvalidParameter", path=SYNC_PATH,
               message=f"the key {odd_key} is not valid here")

    with QwenImageClient(config, retry=FAST_RETRY) as client, \
            pytest.raises(InvalidParameterError) as caught:
        client.text_to_image(TextToImageRequest("a cat"), interface="sync")

    assert odd_key not in str(caught.value) and "[key …5678]" in str(caught.value)
    assert odd_key not in redact(f"x {odd_key} y")


def test_asdict_of_a_configuration_does_not_carry_the_key():
    key = "sk-do-not-copy-me-0123456789"
    config = Config.resolve(SG, api_key=key, environ={})

    assert key not in repr(dataclasses.asdict(config))
    assert key not in repr(config)
    assert config.api_key() == key


@pytest.mark.parametrize("task_id", [".", "..", "../../uploads?x=1#f", "a/b?c", "", "-x",
                                     "x" * 129, "a b", "t\x1b[2J"])
def test_task_ids_that_are_not_task_ids_never_get_into_a_url(emu, task_id):
    with make_client(emu) as client, pytest.raises(ValidationError) as caught:
        client.get_task(task_id)
    assert str(caught.value).startswith("task_id: ") and "nothing was sent" in str(caught.value)
    assert "\x1b" not in str(caught.value)
    with pytest.raises(ValidationError):
        task_path(task_id)
    assert emu.requests == []


def test_a_task_id_is_url_encoded_in_its_path(emu):
    assert task_path("0385dc79-5ff8-4d82.bcb6_x") == "/tasks/0385dc79-5ff8-4d82.bcb6_x"
    with make_client(emu) as client:
        answer = client.get_task("0385dc79-5ff8-4d82-bcb6-253f8f79aae8")
    assert answer["output"]["task_status"] == "UNKNOWN"
    [query] = [r for r in emu.requests if "/tasks/" in r.path]
    assert query.path.endswith("/tasks/0385dc79-5ff8-4d82-bcb6-253f8f79aae8")


@pytest.mark.parametrize("url", ["http://example.com/r.png", "ftp://example.com/r.png",
                                 "file:///etc/passwd", "https:///nohost.png"])
def test_result_urls_must_be_https_or_loopback(url):
    with pytest.raises(DownloadError, match="not an https URL"):
        check_result_url(url)
    check_result_url("https://dashscope-result.oss.example/r.png?Expires=1")
    check_result_url("http://127.0.0.1:8080/results/r.png")


def test_a_failed_download_quotes_only_a_short_sanitised_excerpt():
    body = b"\x1b[31mDENIED\x1b[0m " + b"<Error>" + b"A" * 5000 + b"</Error>"
    server = OneAnswerServer(status=403, body=body)

    with pytest.raises(DownloadError) as caught:
        Downloader(retry=FAST_RETRY).fetch(server.url)

    message = str(caught.value)
    assert "\x1b" not in message and "DENIED" in message
    assert "A" * 200 not in message and len(message) < 700


def test_a_slow_drip_download_ends_at_its_overall_deadline():
    import time

    server = OneAnswerServer(body=png_bytes(64, 64), drip=0.05)  # a byte every 0.05 s
    started = time.monotonic()

    with pytest.raises(DownloadError, match=r"did not finish within 0\.25 s"):
        Downloader(retry=RetryPolicy(attempts=3, base=0.01, cap=0.02, total=30),
                   deadline=0.25).fetch(server.url)

    assert time.monotonic() - started < 3 * 0.25  # the deadline, not one per attempt


def test_an_image_over_the_pixel_cap_is_kept_as_sent_and_never_decoded(tmp_path):
    from qwen_image_dashscope.api.service.download import MAX_RESULT_PIXELS, over_pixel_cap

    buffer = io.BytesIO()
    Image.new("L", (4200, 4200)).save(buffer, "PNG")  # 17.6 MP, a few KB
    server = OneAnswerServer(body=buffer.getvalue())

    image = Downloader(retry=FAST_RETRY).fetch(server.url)

    assert (image.width, image.height) == (4200, 4200) and image.data == buffer.getvalue()
    assert over_pixel_cap(image) and 2560 * 2560 < MAX_RESULT_PIXELS
    assert not over_pixel_cap(GeneratedImage(b"", "", 1520, 2736))


def test_a_redirect_of_a_download_is_checked_like_the_url(tmp_path):
    server = OneAnswerServer(status=302, headers=[("Location", "http://example.com/x.png")])
    with pytest.raises(DownloadError, match="not an https URL"):
        Downloader(retry=FAST_RETRY).fetch(server.url)


@pytest.mark.parametrize("path, interface", [(SYNC_PATH, "sync"), (ASYNC_PATH, "async")])
def test_a_redirect_on_a_billed_post_is_an_error_never_followed(emu, tmp_path, path,
                                                                interface):
    client, guard, _ = guarded_client(emu, tmp_path)
    emu.inject("redirect", path=path)

    with client, pytest.raises(QwenImageError) as caught:
        client.text_to_image(TextToImageRequest("a cat"), interface=interface)

    assert caught.value.code == "Redirect" and "not followed" in str(caught.value)
    assert [r.status for r in emu.requests if r.method == "POST"] == [307]  # sent once
    assert emu.stats["images_billed"] == 0 and guard.status().images_used == 0


def test_a_slow_result_download_is_cut_at_its_deadline_and_recovered_later(emu, tmp_path,
                                                                           monkeypatch):
    from qwen_image_dashscope.api.cli.commands import recovery_clients
    from qwen_image_dashscope.api.recovery.unfinished import recover_all

    for name, value in (("HOME", str(tmp_path)), ("DASHSCOPE_API_KEY", SINGAPORE_KEY),
                        ("DASHSCOPE_HTTP_BASE_URL", emu.base_url(SG))):
        monkeypatch.setenv(name, value)  # recover uses the environment's configuration
    store = ResultStore(tmp_path / "results")
    config = Config.resolve(SG, api_key=SINGAPORE_KEY, base_url=emu.base_url(SG),
                            environ={"HOME": str(tmp_path)})
    with QwenImageClient(config, store=store, retry=FAST_RETRY) as client:
        client.downloader.deadline = 0.25
        emu.inject("slow_drip", duration=3.0, count=4)
        with pytest.raises(DownloadError, match=r"did not finish within 0\.25 s"):
            client.text_to_image(TextToImageRequest("a cat"), interface="sync")
        emu.clear_faults()
        report = io.StringIO()
        assert recover_all(client.journal, None, report,
                           recovery_clients(client.journal)), report.getvalue()

    [png] = store.directory.rglob("*.png")
    assert png.read_bytes() in emu.served_images.values()
    assert emu.stats["images_billed"] == 1


def test_an_oversized_result_is_stored_as_sent_and_not_returned(emu, tmp_path):
    store = ResultStore(tmp_path)
    emu.inject("oversized", width=4200, height=4200, path=SYNC_PATH)
    with make_client(emu, store=store) as client, pytest.raises(DownloadError) as caught:
        client.text_to_image(TextToImageRequest("a cat"), interface="sync")

    [png] = store.directory.rglob("*.png")
    assert png.read_bytes() in emu.served_images.values()
    assert "4200x4200 is too large to decode" in str(caught.value) and str(png) in str(
        caught.value)


# -- 3. the Python surface ---------------------------------------------------------------------


@pytest.mark.parametrize("seed, n", [(np.int64(7), np.int32(1)), (7.0, 1.0), (np.uint16(7), 1)])
def test_integer_like_values_are_sent_as_integers(emu, seed, n):
    with make_client(emu) as client:
        client.text_to_image(TextToImageRequest("a cat", seed=seed, n=n))
    [create] = api_requests(emu, ASYNC_PATH)
    assert create.body.count(b'"seed": 7') == 1 and b'"n": 1' in create.body


@pytest.mark.parametrize("value", [7.5, "7", True, np.float64(7.5)])
def test_non_integers_are_refused_by_type_not_range(emu, value):
    with make_client(emu) as client, pytest.raises(ValidationError) as caught:
        client.text_to_image(TextToImageRequest("a cat", seed=value))
    assert "whole number" in str(caught.value) and "range" not in str(caught.value)
    assert emu.requests == []


def test_an_html_413_from_a_gateway_gets_the_too_large_hint(emu):
    emu.inject("non_json", status=413, body="<html><h1>413 Request Entity Too Large</h1></html>",
               path=SYNC_PATH)
    with make_client(emu) as client, pytest.raises(InvalidParameterError) as caught:
        client.edit_image(ImageEditRequest("blue", images=(png_bytes(),)))
    assert caught.value.code == "BadRequest.TooLarge"
    assert "too large for the service or a proxy" in str(caught.value)


def test_every_public_exception_has_a_docstring():
    classes = [value for name, value in vars(errors_module).items()
               if isinstance(value, type) and issubclass(value, Exception)
               and not name.startswith("_")]
    assert len(classes) > 15
    assert [c.__name__ for c in classes if not (c.__doc__ or "").strip()] == []


def test_the_error_table_documents_every_public_exception():
    table = ((Path(__file__).resolve().parents[1] / "docs" / "python-and-cli.md")
             .read_text(encoding="utf-8"))
    names = [name for name, value in vars(errors_module).items()
             if isinstance(value, type) and issubclass(value, Exception)
             and not name.startswith("_")]
    assert [name for name in names if f"| `{name}` |" not in table] == []
