"""Issue 15 against the emulator over loopback: no markup reaches the page, every number
from outside is bounded (and a failure before sending keeps no booking), the pixel cap
holds everywhere, and the low findings (key body, lock and index symlinks, terminal
escapes, task ids, loopback result URLs)."""
import io
import json
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from qwen_image_dashscope.api import (
    Config,
    DownloadError,
    InvalidParameterError,
    QwenImageClient,
    ResultStore,
    TextToImageRequest,
    ValidationError,
    cli,
)
from qwen_image_dashscope.api.call import generation
from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator
from qwen_image_dashscope.api.schema import GeneratedImage, GenerationResult
from qwen_image_dashscope.api.service.download import Downloader
from qwen_image_dashscope.api.service.quotas import AccountLimits, read_quotas
from qwen_image_dashscope.api.service.wire import read_usage, within_asked
from qwen_image_dashscope.api.state import PROCESS_STATE
from qwen_image_dashscope.api.storage.budget import SpendGuard
from qwen_image_dashscope.api.storage.durations import FILE_NAME, DurationFile
from support.client import (
    ASYNC_PATH,
    FAST_RETRY,
    RECOVERY_GRACE,
    SG,
    SYNC_PATH,
    api_requests,
    make_client,
    roomy_rate,
)
from support.comfy_stubs.harness import run_node

PLUS = "qwen-image-plus"
MARKUP = '<img src=x onerror="alert(1)"> [[click|https://evil.example/x]] www.evil.example'


def guarded(emu, tmp_path, images_per_day=3, **options):
    config = Config.resolve(SG, api_key=SINGAPORE_KEY, base_url=emu.base_url(SG),
                            environ={"HOME": str(tmp_path),
                                     "QWEN_IMAGE_RECOVERY_GRACE": str(RECOVERY_GRACE)})
    guard = SpendGuard(images_per_day=images_per_day, path=tmp_path / "ledger.json")
    return QwenImageClient(config, retry=FAST_RETRY, budget=guard, **options), guard


def posts(emu):
    return [r for r in emu.requests if r.method == "POST"]


def warnings(caplog, text):
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def png(width, height, mode="L"):
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


# -- 3. no markup reaches the page ----------------------------------------------------------


def test_page_text_escapes_html_and_breaks_every_link():
    from qwen_image_dashscope.nodes.status import page_text

    shown = page_text(MARKUP + " mailto:a@b.example javascript:alert(1)")
    assert "<" not in shown and ">" not in shown and "&lt;img src=x" in shown
    for link in ("[[", "]]", "://", "www.evil", "evil.example", "mailto:", "javascript:"):
        assert link not in shown, link
    assert shown.replace("\u200b", "").replace("&lt;", "<").replace("&gt;", ">").replace(
        "&amp;", "&") == MARKUP + " mailto:a@b.example javascript:alert(1)"  # nothing lost
    plain = "3 done · 2 running (12 s) · waiting for the model's rate limit: next call in 2 s"
    assert page_text(plain) == plain


def test_a_status_text_sent_to_comfyui_is_escaped(comfy):
    from qwen_image_dashscope.nodes.comfy_bridge import Comfy

    Comfy().send_text("1 image · saved in " + MARKUP, "5")

    [text] = comfy.server.PromptServer.instance.texts_for("5")
    assert "<img" not in text and "&lt;img" in text and "[[" not in text and "://" not in text


@pytest.mark.parametrize("emulator", [roomy_rate(PLUS)], indirect=True)  # no rate waits
def test_markup_in_the_prompt_never_reaches_a_status_text_raw(service, comfy):
    from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I

    service.set_latency(0.4)
    images, prompts, _, _ = run_node(T2I, prompt=MARKUP, batch=3, unique_id="9",
                                     prompt_extend=False)

    assert images.shape[0] == 3 and prompts.split("\n")[0] == MARKUP
    texts = comfy.server.PromptServer.instance.texts_for("9")
    assert texts and not [t for t in texts if "<" in t or "[[" in t or "://" in t]


@pytest.mark.parametrize("custom", [MARKUP, "qwen image", "qwen-image/../x", "模型"])
def test_a_custom_model_that_is_not_a_model_id_is_refused_everywhere(service, comfy, custom,
                                                                       capsys):
    from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit
    from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I

    allowed = "Allowed: letters, digits, '.', '_' and '-'."
    for node in (T2I, Edit):  # at queue time
        message = node.VALIDATE_INPUTS(prompt="a cat", model=node.INPUT_TYPES()["required"][
            "model"][0][0], custom_model=custom)
        assert message.startswith("custom_model: ") and allowed in message, message
        assert "<" not in message and "[[" not in message
    with pytest.raises(ValidationError) as caught:  # at run time (a linked value)
        run_node(T2I, prompt="a cat", custom_model=custom, unique_id="3")
    assert caught.value.parameter == "custom_model" and allowed in str(caught.value)
    assert comfy.server.PromptServer.instance.texts_for("3") == []
    with make_client(service) as client, pytest.raises(ValidationError) as caught:  # Python
        client.text_to_image(TextToImageRequest("a cat", model=custom))
    assert caught.value.parameter == "model" and allowed in str(caught.value)
    capsys.readouterr()
    assert cli.main(["generate", "a cat", "--model", custom]) == 2  # the command line
    assert "model: " in capsys.readouterr().err
    assert service.requests == []


def test_a_model_id_of_the_allowed_characters_is_sent_as_written(service, comfy):
    from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I

    assert T2I.VALIDATE_INPUTS(prompt="a cat", model="qwen-image-plus",
                               custom_model="qwen-image-plus_2026.01-preview") is True


# -- 4. numbers from outside ------------------------------------------------------------------


def durations_file(home: Path, base_url: str, mean="1e400", deviation="1.0") -> Path:
    path = home / ".dashscope" / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"version": 1, "durations": [{"base_url": "%s", "model": "%s", '
                    '"interface": "async", "mean": %s, "deviation": %s, "updated": 1e400}]}'
                    % (base_url, PLUS, mean, deviation))
    return path


@pytest.mark.parametrize("mean, deviation", [("1e400", "1.0"), ("2.0", "1e400"),
                                             ("-5", "1"), ("1e9", "1")])
def test_a_bad_learned_duration_is_no_prior_and_every_call_returns_its_image(
        emu, tmp_path, caplog, mean, deviation):
    durations_file(tmp_path, emu.base_url(SG), mean, deviation)
    client, guard = guarded(emu, tmp_path, store=ResultStore(tmp_path / "results"))
    with client:
        results = [client.text_to_image(TextToImageRequest(f"a kite {i}")) for i in range(2)]

    assert [len(r.images) for r in results] == [1, 1]
    assert emu.stats["images_billed"] == 2 and guard.status().images_used == 2
    assert len(warnings(caplog, "Ignoring a learned")) == 1  # logged once
    # The file now holds what was learned, nothing infinite.
    saved = json.loads((tmp_path / ".dashscope" / FILE_NAME).read_text())
    assert all(0 < e["mean"] < 3600 for e in saved["durations"])


def test_polling_a_task_with_a_bad_durations_file_gets_its_answer(emu, tmp_path):
    # ``qwen-image recover`` and ``wait_task`` poll as a call does, from the same file.
    durations_file(tmp_path, emu.base_url(SG))
    client, _ = guarded(emu, tmp_path)
    with client:
        task_id = client.create_task(TextToImageRequest("a lighthouse"))
        answer = client.wait_task(task_id, model=PLUS)

    assert answer["output"]["task_status"] == "SUCCEEDED" and emu.stats["images_billed"] == 1


def test_quotas_of_1e400_use_the_table_and_bill_each_call_once(tmp_path, caplog):
    endless = {PLUS: {"request_limit": float("inf"), "async_user_concurrency_limit": 1e400}}
    with Emulator(latency=0.05, quotas=endless) as emu:
        assert b"Infinity" in emu_quotas_body(emu)  # the answer the client reads
        client, guard = guarded(emu, tmp_path)
        with client:
            # Two calls (a third waited for the table's rate window: a second).
            results = [client.text_to_image(TextToImageRequest(f"kite {i}")) for i in range(2)]
        reads = api_requests(emu, "/quotas", "GET")[1:]  # after the test's own look
        stats = emu.stats

    assert [len(r.images) for r in results] == [1, 1]
    assert stats["images_billed"] == 2 and guard.status().images_used == 2
    assert len(reads) == 1  # not asked again at every call
    [limiter] = [v for k, v in PROCESS_STATE.limits.limiters.items() if k[1] == PLUS]
    assert limiter.limits.source == "model table"
    assert len(warnings(caplog, "Ignoring quotas request_limit")) == 1


def emu_quotas_body(emu):
    import urllib.request

    request = urllib.request.Request(f"{emu.base_url(SG)}/quotas?model={PLUS}",
                                     headers={"Authorization": f"Bearer {SINGAPORE_KEY}"})
    with urllib.request.urlopen(request) as answer:
        return answer.read()


@pytest.mark.parametrize("limit, expected", [
    ({"request_limit": 10 ** 400, "request_limit_period": 1}, AccountLimits()),
    ({"request_limit": 5, "request_limit_period": 1e9}, AccountLimits()),
    ({"request_limit": 2.5, "request_limit_period": 1, "async_user_concurrency_limit": 0.5},
     AccountLimits()),
    ({"request_limit": 5, "request_limit_period": float("nan"),
      "async_user_concurrency_limit": 3}, AccountLimits(concurrent=3)),
    ({"request_limit": 120, "request_limit_period": 60, "async_user_concurrency_limit": 10 ** 9},
     AccountLimits(120, 60.0)),
])
def test_absurd_quota_periods_and_counts_are_not_taken(limit, expected):
    answer = {"output": {"quotas": [{"model": PLUS, "model_limit": limit}]}}
    assert read_quotas(answer, PLUS) == expected


def test_a_failure_before_sending_keeps_no_booking(emu, tmp_path, monkeypatch):
    # What 1e400 in the quotas answer did before: an error while the model's limiter was
    # built. Any failure before the request is sent must give the booking back.
    def broken(self, spec, cancel_event=None):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(generation.Generator, "limiter", broken)
    client, guard = guarded(emu, tmp_path)
    with client:
        for interface in ("async", "sync", "async"):
            with pytest.raises(OverflowError):
                client.text_to_image(TextToImageRequest("a cat"), interface=interface)

    assert guard.status().images_used == 0 and posts(emu) == []


# The account takes 10 calls a second, so the call after the refused one and its retry is
# not held by the rate window either: only a held gate could hold it.
@pytest.mark.parametrize("emulator", [roomy_rate(PLUS)], indirect=True)
@pytest.mark.parametrize("retry_after", ["1e9", "1e400", "-3", "Fri, 31 Dec 2100 23:59:59 GMT"])
def test_an_absurd_retry_after_is_not_waited_for(emu, tmp_path, caplog, retry_after):
    client, guard = guarded(emu, tmp_path)
    emu.inject("http_error", status=429, code="Throttling.RateQuota",
               message="Requests rate limit exceeded, please try again later.",
               retry_after=retry_after, path=ASYNC_PATH)
    with client:
        result = client.text_to_image(TextToImageRequest("a cat"))
        result_2 = client.text_to_image(TextToImageRequest("a dog"))  # the gate is not held

    assert len(result.images) == 1 and len(result_2.images) == 1
    assert [r.status for r in api_requests(emu, ASYNC_PATH, "POST")] == [429, 200, 200]
    assert emu.stats["images_billed"] == 2 and guard.status().images_used == 2
    [limiter] = [v for k, v in PROCESS_STATE.limits.limiters.items() if k[1] == PLUS]
    assert limiter.rate._hold_until - __import__("time").monotonic() < 60
    assert len(warnings(caplog, "Ignoring Retry-After")) == 1


def test_usage_figures_out_of_range_are_not_taken_and_counts_stay_within_n():
    usage = read_usage({"image_count": 10 ** 6, "width": 1e400, "height": -1,
                        "input_image_count": 7})
    assert (usage.output_images, usage.width, usage.height, usage.input_images) == (
        None, None, None, 7)
    bounded = within_asked(read_usage({"output_image_count": 50, "input_image_count": 9}), 2, 1)
    assert (bounded.output_images, bounded.input_images) == (2, 1)
    assert within_asked(read_usage({"image_count": 1}), 2, 0).output_images == 1


def test_a_reported_image_count_above_n_settles_n(tmp_path):
    from qwen_image_dashscope.api.catalog.models import MODELS
    from qwen_image_dashscope.api.service.wire import read_task
    from qwen_image_dashscope.api.storage.charges import Charges

    guard = SpendGuard(images_per_day=10, path=tmp_path / "ledger.json")
    charges = Charges(guard, SG)
    charges.hold_for_task("t-1", charges.reserve(MODELS[PLUS], 1, None, 0, []))
    answer = {"output": {"task_status": "SUCCEEDED", "results": [
        {"url": f"https://r.example/{i}.png"} for i in range(5)]}, "usage": {"image_count": 40}}

    charges.close_task("t-1", read_task(answer, "t-1"))

    assert guard.status().images_used == 1  # the 1 asked for, not 40 (nor 5 URLs)


# -- 5. the pixel cap ---------------------------------------------------------------------------


def test_an_over_cap_result_is_not_reused_from_the_store(emu, tmp_path):
    store = ResultStore(tmp_path / "results")
    request = TextToImageRequest("a cat", seed=5)
    emu.inject("oversized", width=4200, height=4200, path=SYNC_PATH)
    with make_client(emu, store=store) as client:
        with pytest.raises(DownloadError, match="too large to decode"):
            client.text_to_image(request, interface="sync", reuse=True)
        again = client.text_to_image(request, interface="sync", reuse=True)

    assert not again.from_store and len(api_requests(emu, SYNC_PATH, "POST")) == 2
    assert not (store.directory / "index.jsonl").exists() or "4200" not in (
        store.directory / "index.jsonl").read_text()
    [big] = [p for p in store.directory.rglob("*.png") if Image.open(p).size == (4200, 4200)]
    assert big.exists()  # kept as sent


def index_record(store, fingerprint, files):
    store.directory.mkdir(parents=True, exist_ok=True)
    with open(store.directory / "index.jsonl", "a") as index:
        index.write(json.dumps({"fingerprint": fingerprint, "files": files}) + "\n")


def stored_file(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"url": "u", "width": 1, "height": 1}))
    return path


def test_an_index_pointing_outside_the_store_or_over_the_cap_is_not_reused(tmp_path):
    store = ResultStore(tmp_path / "results")
    outside = stored_file(tmp_path / "elsewhere", "secret.png", png(64, 64))
    stored_file(store.directory / "day", "big.png", png(4200, 4200))
    stored_file(store.directory / "day", "ok.png", png(64, 64))
    (store.directory / "day" / "link.png").symlink_to(outside)
    (store.directory / "day" / "link.json").symlink_to(outside.with_suffix(".json"))
    for fingerprint, files in (("a", [str(outside)]), ("b", ["../elsewhere/secret.png"]),
                               ("c", ["day/link.png"]), ("d", ["day/big.png"]),
                               ("e", ["day/ok.png", "day/big.png"]), ("f", "day/ok.png"),
                               ("g", [7])):
        index_record(store, fingerprint, files)
        assert store.lookup(fingerprint) is None, fingerprint
    index_record(store, "h", ["day/ok.png"])
    [found] = store.lookup("h")
    assert found.path == store.directory / "day" / "ok.png"


def test_the_index_is_never_written_or_read_through_a_symlink(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.directory.mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("keep me\n")
    (store.directory / "index.jsonl").symlink_to(target)
    result = GenerationResult(images=[GeneratedImage(png(64, 64, "RGB"), "u", 64, 64)],
                              model=PLUS, region=SG, interface="sync")
    request = TextToImageRequest("a cat", seed=1)

    [path] = store.save(result, request, fingerprint="f")  # saved, not indexed

    assert path.exists() and target.read_text() == "keep me\n"
    assert store.lookup("f") is None


def test_previews_skip_images_over_the_cap_without_decoding_them():
    from qwen_image_dashscope.nodes.runner import _decoded

    result = GenerationResult(images=[GeneratedImage(png(4200, 4200), "u", 4200, 4200),
                                      GeneratedImage(png(600, 300, "RGB"), "v", 600, 300)],
                              model=PLUS, region=SG, interface="sync")
    over, fine = _decoded(result)
    assert over.preview is None and over.pixels is None
    assert fine.preview.size == (512, 256) and fine.pixels[0].shape == (300, 600, 3)


def test_a_padded_batch_over_the_cap_fails_before_decoding(monkeypatch):
    from qwen_image_dashscope.nodes import tensors

    decoded = []
    monkeypatch.setattr(tensors, "decode_pixels", lambda data: decoded.append(data))
    wide, tall = png(8192, 2048), png(2048, 8192)  # each exactly at the 16 MP cap
    with pytest.raises(DownloadError) as caught:
        tensors.decode_images([wide, tall], ["/store/a.png", "/store/b.png"])

    message = str(caught.value)
    assert "8192x2048, 2048x8192" in message and "8192x8192" in message
    assert "/store/a.png, /store/b.png" in message and decoded == []


def test_a_node_whose_padded_batch_is_over_budget_fails_naming_sizes_and_files(
        service, comfy, monkeypatch):
    from qwen_image_dashscope.nodes import tensors
    from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I

    # The budget scaled down to what two 1024x1024 frames take (RGB and MASK), less one
    # byte: a wide and a tall result padded to 1024x1024 are over it.
    monkeypatch.setattr(tensors, "BATCH_TENSOR_BYTES", 2 * 1024 * 1024 * 16 - 1)
    service.inject("oversized", width=1024, height=512, path=ASYNC_PATH)
    service.inject("oversized", width=512, height=1024, path=ASYNC_PATH)
    with pytest.raises(DownloadError) as caught:
        run_node(T2I, prompt="a cat", batch=2, size="1328*1328 (1:1)", seed=3)

    message = str(caught.value)
    assert "1024x512" in message and "512x1024" in message and "GiB" in message
    files = sorted(Path(comfy.folder_paths.get_output_directory()).rglob("*.png"))
    assert len(files) == 2 and all(str(f) in message for f in files)


def test_decode_pixels_refuses_an_image_over_the_cap():
    from qwen_image_dashscope.api.images import decode_pixels

    with pytest.raises(ValueError, match="over the 16777216-pixel cap"):
        decode_pixels(png(4200, 4200))
    colours, alpha = decode_pixels(png(8, 4, "RGB"))
    assert colours.shape == (4, 8, 3) and alpha is None


# -- the low findings ---------------------------------------------------------------------------


def test_the_key_without_its_prefix_is_redacted_in_errors_and_the_journal(emu, tmp_path):
    key = "sk-" + "a1b2c3d4e5f6a7b8c9d0"
    config = Config.resolve(SG, api_key=key, base_url=emu.base_url(SG),
                            environ={"HOME": str(tmp_path)})
    emu.inject("http_error", status=400, code="InvalidParameter", path=SYNC_PATH,
               message=f"the key {key[3:]} is not valid here")
    with QwenImageClient(config, retry=FAST_RETRY) as client, \
            pytest.raises(InvalidParameterError) as caught:
        client.text_to_image(TextToImageRequest("a cat"), interface="sync")

    assert key[3:] not in str(caught.value) and "[key …c9d0]" in str(caught.value)
    journal = [p for p in (tmp_path / ".dashscope").rglob("*") if p.is_file()]
    assert journal and not [p for p in journal if key[3:].encode() in p.read_bytes()]


def test_a_short_key_body_is_not_registered_as_a_secret():
    from qwen_image_dashscope.api.config import KeySource
    from qwen_image_dashscope.api.errors import redact

    KeySource("sk-abc", "a test")

    assert redact("abc and sk-abc") == "abc and [key]"


def test_every_lock_file_is_opened_without_following_a_symlink(tmp_path, caplog):
    target = tmp_path / "victim"
    path = tmp_path / FILE_NAME
    (tmp_path / f"{FILE_NAME}.lock").symlink_to(target)
    import threading

    durations = DurationFile(path, threading.Lock())
    durations.save(("u", PLUS, "async"), (12.0, 1.0))
    durations.save(("u", PLUS, "async"), (12.0, 1.0))

    assert not target.exists() and not path.exists()
    assert len(warnings(caplog, "cannot be kept")) == 1
    (tmp_path / f"{FILE_NAME}.lock").unlink()
    durations.save(("u", PLUS, "async"), (12.0, 1.0))
    assert oct(os.stat(tmp_path / f"{FILE_NAME}.lock").st_mode & 0o777) == "0o600"


def test_terminal_escapes_from_the_service_never_reach_the_terminal(emulator, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DASHSCOPE_API_KEY", SINGAPORE_KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emulator.base_url(SG))
    emulator.inject("http_error", status=400, code="InvalidParameter\x1b]0;pwned\x07",
                    message="bad \x1b[2J\x1b[31mred\x9b1m \u202eevil", path=SYNC_PATH)

    code = cli.main(["generate", "a cat", "--interface", "sync", "--out", str(tmp_path / "o")])

    captured = capsys.readouterr()
    assert code == 2 and "red" in captured.err
    for output in (captured.out, captured.err):
        assert not [c for c in output if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0
                    or c == "\u202e"]


def test_plain_http_results_only_for_a_loopback_base_url(emu):
    real = Config.resolve(SG, api_key=SINGAPORE_KEY,
                          base_url="https://dashscope-intl.aliyuncs.com/api/v1", environ={})
    with QwenImageClient(real) as client:
        assert client.downloader.loopback_http is False
        with pytest.raises(DownloadError, match="not an https URL"):
            client.downloader.fetch("http://127.0.0.1:9/results/r.png")
    with make_client(emu) as client:
        assert client.downloader.loopback_http is True
    with pytest.raises(DownloadError, match="not an https URL"):
        Downloader(loopback_http=False).fetch("http://localhost:9/r.png")
