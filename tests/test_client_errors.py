"""Error answers, their messages, the retry policy and the no-duplicate rule for billed POSTs."""
import logging
import socket

import pytest

from qwen_image_dashscope.api import (
    AccessDeniedError,
    AmbiguousRequestError,
    AuthenticationError,
    Config,
    ContentModerationError,
    ImageEditRequest,
    ModelNotFoundError,
    QuotaExhaustedError,
    QwenImageClient,
    RetryPolicy,
    ServerError,
    TaskFailedError,
    TaskUnknownError,
    TextToImageRequest,
    TransportError,
)
from qwen_image_dashscope.api.emulator import Emulator
from support.client import (
    ASYNC_PATH,
    BJ,
    SG,
    SYNC_PATH,
    api_requests,
    make_client,
    png_bytes,
    roomy_rate,
    wait_until,
)

T2I = TextToImageRequest("a lighthouse at dusk", seed=1)
TWO_ATTEMPTS = RetryPolicy(attempts=2, base=0.05, cap=0.1, total=5.0)


def test_key_of_the_other_region_names_both_regions(emu):
    with make_client(emu, BJ, key_region=SG) as wrong:
        with pytest.raises(AuthenticationError) as caught:
            wrong.text_to_image(T2I)
    message = str(caught.value)
    assert "DashScope InvalidApiKey: Invalid API-key provided. (HTTP 401" in message
    assert "Singapore (ap-southeast-1)" in message and "Beijing (cn-beijing)" in message
    assert "DASHSCOPE_API_REGION=ap-southeast-1" in message
    assert "DASHSCOPE_API_KEY_CN_BEIJING" in message
    assert len(api_requests(emu, ASYNC_PATH)) == 1  # never retried


@pytest.mark.parametrize("code, status, expected", [
    ("Throttling.AllocationQuota", 429, "quota or free tier of this model is used up"),
    ("AllocationQuota.FreeTierOnly", 403, "免費額度用完即停"),
    ("Arrearage", 400, "overdue payment"),
    ("PostpaidBillOverdue", 429, "pay-as-you-go bill"),
    ("CommodityNotPurchased", 429, "not activated"),
])
def test_quota_errors_are_never_retried(emu, client, code, status, expected):
    emu.inject("http_error", status=status, code=code, message="quota message", retry_after=0)
    with pytest.raises(QuotaExhaustedError) as caught:
        client.text_to_image(T2I, interface="sync")
    assert expected in str(caught.value) and code in str(caught.value)
    assert len(api_requests(emu, SYNC_PATH)) == 1
    assert emu.stats["images_billed"] == 0


# A Retry-After of a quarter of a second (the service's are whole seconds; the client takes
# any number), on an account that takes 10 calls a second: without the Retry-After the
# client would pause the model for a tenth of a second (one call's share), so the gap below
# tells the two apart (at the table's 2 a second the pause alone is half a second).
@pytest.mark.parametrize("emulator", [roomy_rate("qwen-image-plus")], indirect=True)
def test_rate_limit_waits_for_retry_after_then_succeeds(emu, client):
    emu.inject("http_error", status=429, code="Throttling.RateQuota",
               message="Requests rate limit exceeded", retry_after=0.25)
    result = client.text_to_image(T2I)
    first, second = api_requests(emu, ASYNC_PATH)
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.25
    assert result.images and emu.stats["tasks_created"] == 1


def test_server_error_with_dashscope_body_is_retried(emu, client):
    emu.inject("http_error", status=500, code="InternalError", message="boom")
    result = client.text_to_image(T2I, interface="sync")
    assert [r.status for r in api_requests(emu, SYNC_PATH)] == [500, 200]
    assert len(result.images) == 1 and emu.stats["images_billed"] == 1


def test_persistent_server_error_gives_up_after_the_attempts(emu):
    emu.inject("http_error", status=503, code="ModelUnavailable", message="busy", count=10)
    with make_client(emu, retry=TWO_ATTEMPTS) as client:
        with pytest.raises(ServerError) as caught:
            client.text_to_image(T2I)
    assert len(api_requests(emu, ASYNC_PATH)) == 2
    assert "failed calls are not billed" in str(caught.value)


def test_non_json_503_is_retried(emu, client):
    emu.inject("non_json", status=503, body="<html>Service Unavailable</html>")
    client.text_to_image(T2I, interface="sync")
    assert [r.status for r in api_requests(emu, SYNC_PATH)] == [503, 200]


def test_non_json_502_on_a_sync_post_is_ambiguous(emu, client):
    emu.inject("non_json", status=502, body="<html>Bad Gateway</html>")
    with pytest.raises(AmbiguousRequestError) as caught:
        client.text_to_image(T2I, interface="sync")
    message = str(caught.value)
    assert "HTTP 502 from something other than DashScope: <html>Bad Gateway</html>" in message
    assert "may have been processed and billed, so it was not sent again" in message
    assert "usage statistics" in message and "possibly paying twice" in message
    assert len(api_requests(emu, SYNC_PATH)) == 1


def test_non_json_502_on_a_task_creation_is_sent_again_once_the_list_shows_no_task(emu, client):
    # The gateway answered instead of the service: the task list shows no such task after
    # the grace period, so the creation is sent once more, and billed once.
    emu.inject("non_json", status=502, body="<html>Bad Gateway</html>", path=ASYNC_PATH)
    result = client.text_to_image(T2I)
    assert len(result.images) == 1
    assert len(api_requests(emu, ASYNC_PATH, "POST")) == 2
    assert api_requests(emu, "/tasks", "GET")  # the list was read before sending again
    assert emu.stats["tasks_created"] == 1 and emu.stats["images_billed"] == 1


def test_connection_lost_after_processing_is_not_resent(emu, client):
    emu.inject("drop_after", path=ASYNC_PATH)
    result = client.text_to_image(T2I)  # a fresh key: its task is found by its prompt
    assert len(api_requests(emu, ASYNC_PATH)) == 1
    assert emu.stats["tasks_created"] == 1 and emu.stats["images_billed"] == 1
    assert len(result.images) == 1 and result.task_id == emu.tasks[0]["id"]
    assert any("answer to the task creation was lost" in note for note in result.notes)


def test_sync_connection_lost_after_processing_is_not_resent(emu, client):
    emu.inject("drop_after", path=SYNC_PATH)
    with pytest.raises(AmbiguousRequestError):
        client.edit_image(ImageEditRequest("blue", images=(png_bytes(),)))
    assert len(api_requests(emu, SYNC_PATH)) == 1
    assert emu.stats["images_billed"] == 1


def test_connection_lost_before_processing_is_resent_only_after_the_task_list(emu, client):
    # From the client's side a drop before and after processing look the same: the request
    # left, no answer came. Only the task list, showing no such task after the grace
    # period, makes a second send safe.
    emu.inject("drop", path=ASYNC_PATH)
    result = client.text_to_image(T2I)
    assert len(result.images) == 1
    creates = api_requests(emu, ASYNC_PATH, "POST")
    lists = [r for r in api_requests(emu, "/tasks", "GET") if r.path.endswith("/tasks")]
    assert len(creates) == 2 and lists and lists[0].time < creates[1].time
    assert emu.stats["tasks_created"] == 1


def test_read_timeout_on_a_billed_post_is_ambiguous(emu):
    emu.set_latency(0.5)
    with make_client(emu, timeout=0.15) as impatient:
        with pytest.raises(AmbiguousRequestError) as caught:
            impatient.text_to_image(T2I, interface="sync")
    assert "ReadTimeout" in str(caught.value)
    assert len(api_requests(emu, SYNC_PATH)) == 1
    assert wait_until(lambda: emu.stats["images_billed"] == 1)  # it was made and billed


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_is_retried_then_reported(caplog):
    config = Config.resolve(SG, api_key="sk-unused-1234",
                            base_url=f"http://127.0.0.1:{_closed_port()}/api/v1", environ={})
    caplog.set_level(logging.WARNING)
    with QwenImageClient(config, retry=TWO_ATTEMPTS) as unreachable:
        with pytest.raises(TransportError) as caught:
            unreachable.text_to_image(T2I)
    assert "Could not reach DashScope at http://127.0.0.1:" in str(caught.value)
    assert "Check the network, a proxy" in str(caught.value)
    retries = [r for r in caplog.records if "(TransportError); attempt" in r.getMessage()]
    assert len(retries) == 1


class StartOnRetry(logging.Handler):
    """Starts ``emulator`` when the client says it will try again after nothing listened."""

    def __init__(self, emulator):
        super().__init__(logging.WARNING)
        self.emulator, self.started = emulator, False

    def emit(self, record):
        if "(TransportError); attempt" in record.getMessage() and not self.started:
            self.started = True
            self.emulator.start()


def test_refused_then_listening_succeeds():
    # The first attempt finds nothing listening (never sent, so safe to resend); the
    # emulator then comes up on that port, before the next one, and the task is created
    # once. (Started by a timer, it came up after one attempt or after two, and then the
    # third waited for the rate window: a second.)
    port = _closed_port()
    emulator = Emulator(latency=0.05, port=port)
    config = Config.resolve(SG, api_key="sk-emulator-singapore",
                            base_url=f"http://127.0.0.1:{port}/{SG}/api/v1", environ={})
    starter = StartOnRetry(emulator)
    logging.getLogger("qwen_image_dashscope").addHandler(starter)
    patient = RetryPolicy(attempts=20, base=0.05, cap=0.1, total=10)
    try:
        with QwenImageClient(config, retry=patient) as c:
            result = c.text_to_image(T2I)
        assert result.images and emulator.stats["tasks_created"] == 1
        assert len(api_requests(emulator, ASYNC_PATH)) == 1
    finally:
        logging.getLogger("qwen_image_dashscope").removeHandler(starter)
        emulator.stop()


def test_content_moderation(emu, client):
    with pytest.raises(ContentModerationError) as caught:
        client.text_to_image(TextToImageRequest("a [[unsafe]] scene"), interface="sync")
    assert "DataInspectionFailed" in str(caught.value)
    assert "Rephrase the prompt" in str(caught.value)
    assert len(api_requests(emu, SYNC_PATH)) == 1


def test_access_denied_and_model_not_found(emu, client):
    emu.inject("http_error", status=403, code="Model.AccessDenied", message="no access")
    with pytest.raises(AccessDeniedError) as denied:
        client.text_to_image(T2I, interface="sync")
    assert "activate the model in the Model Studio console" in str(denied.value)
    emu.inject("http_error", status=404, code="ModelNotFound", message="no such model")
    with pytest.raises(ModelNotFoundError) as missing:
        client.text_to_image(T2I, interface="sync")
    assert "Check the model id" in str(missing.value)
    assert len(api_requests(emu, SYNC_PATH)) == 2


def test_failed_task(emu, client):
    emu.inject("task_failed", code="InternalError.Algo", message="inference failed")
    with pytest.raises(TaskFailedError) as caught:
        client.text_to_image(T2I)
    assert caught.value.code == "InternalError.Algo" and caught.value.status == "FAILED"
    assert "failed: InternalError.Algo: inference failed" in str(caught.value)
    assert "Failed tasks are not billed" in str(caught.value)
    assert emu.stats["images_billed"] == 0


def test_unknown_task(emu, client):
    with pytest.raises(TaskUnknownError) as caught:
        client.wait_task("0f0f0f0f-0000-4000-8000-000000000000")
    assert "24 hours" in str(caught.value) and "Beijing (cn-beijing)" in str(caught.value)


def test_poll_errors_are_retried(emu, client):
    emu.inject("http_error", path="/tasks/", status=503, code="ServiceUnavailable",
               message="busy")
    emu.inject("drop", path="/tasks/")
    emu.inject("http_error", path="/tasks/", status=429, code="Throttling.RateQuota",
               message="slow down", retry_after=0)
    result = client.text_to_image(T2I)
    statuses = [r.status for r in api_requests(emu, f"/tasks/{result.task_id}", "GET")]
    assert statuses[:3] == [503, None, 429] and statuses[-1] == 200
    assert emu.stats["tasks_created"] == 1 and len(result.images) == 1

