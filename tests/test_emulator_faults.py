"""The emulator's injected faults (errors, drops, truncation, failed tasks, gateway pages,
redirects, slow and oversized results) and the cap on request bodies on every route."""
import http.client
import io
import json
import time

import pytest
import requests
from PIL import Image

from qwen_image_dashscope.api.emulator import BEIJING_KEY, Emulator
from support.emulator_http import (
    BJ,
    GENERATION,
    STANDARD_EMULATOR,
    SYNTHESIS,
    assert_error,
    auth,
    create_task,
    download,
    edit_body,
    generate,
    get_policy,
    image_urls,
    png,
    query,
    t2i_body,
    upload,
    wait_for,
)

EMULATOR = STANDARD_EMULATOR  # the options of this module's ``emulator``/``emu``


# -- faults ------------------------------------------------------------------------------------


def test_http_error_faults_fire_in_order_and_once(emu):
    emu.inject("http_error", status=503, code="ModelUnavailable", message="busy", retry_after=2)
    emu.inject("non_json")
    first = generate(emu, t2i_body())
    assert_error(first, 503, "ModelUnavailable", "busy")
    assert first.headers["Retry-After"] == "2"
    second = generate(emu, t2i_body())
    assert second.status_code == 502
    assert second.headers["Content-Type"] == "text/html"
    assert second.text == "<html>Bad Gateway</html>"
    assert generate(emu, t2i_body()).status_code == 200
    assert emu.stats["images_billed"] == 1 and emu.stats["faults_fired"] == 2
    assert emu.faults == []


def test_faults_match_the_path_and_count(emu):
    emu.inject("http_error", path="/tasks/", count=2)
    assert emu.faults == [("http_error", 2, "/tasks/")]
    assert generate(emu, t2i_body()).status_code == 200  # not a task path: untouched
    assert_error(query(emu, "a"), 500, "InternalError")
    last = query(emu, "b")
    assert_error(last, 500, "InternalError")
    assert "Retry-After" not in last.headers
    assert query(emu, "c").status_code == 200
    emu.inject("drop", count=3)
    emu.clear_faults()
    assert emu.faults == [] and query(emu, "d").status_code == 200


def test_drop_closes_without_answer_and_processes_nothing(emu):
    emu.inject("drop")
    with pytest.raises(requests.ConnectionError):
        create_task(emu)
    assert emu.stats["tasks_created"] == 0 and emu.tasks == []
    assert emu.requests[-1].status is None and emu.requests[-1].json["model"] == "qwen-image-plus"
    assert create_task(emu).status_code == 200


def test_drop_after_processes_in_full_then_closes(emu):
    emu.inject("drop_after", path=SYNTHESIS)
    with pytest.raises(requests.ConnectionError):
        create_task(emu)
    (task,) = emu.tasks
    assert wait_for(emu, task["id"])["task_status"] == "SUCCEEDED"  # created and run
    emu.inject("drop_after")
    with pytest.raises(requests.ConnectionError):
        generate(emu, t2i_body())
    assert emu.stats["images_billed"] == 2  # both billed though never answered
    assert emu.requests[-1].status is None


def test_truncate_cuts_result_downloads_in_half(emu):
    url = image_urls(generate(emu, t2i_body()))[0]
    emu.inject("truncate")
    assert generate(emu, t2i_body()).status_code == 200  # API requests are not its target
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        requests.get(url)
    raw = requests.get(url, stream=True)  # nothing queued now: complete
    assert len(raw.content) == int(raw.headers["Content-Length"]) == len(emu.served_images[url])
    # Seen from a raw socket: full Content-Length announced, half sent.
    emu.inject("truncate")
    conn = http.client.HTTPConnection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    conn.request("GET", url[len(emu.url):])
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    assert len(info.value.partial) == len(emu.served_images[url]) // 2
    conn.close()


def test_task_failed_fault_ends_the_next_task_failed(emu):
    emu.inject("task_failed", code="InternalError.Algo", message="inference crashed")
    failed_id = create_task(emu).json()["output"]["task_id"]
    ok_id = create_task(emu).json()["output"]["task_id"]
    wait_for(emu, failed_id)
    failed = query(emu, failed_id)
    assert failed.status_code == 200 and "usage" not in failed.json()
    output = failed.json()["output"]
    assert (output["task_status"], output["code"], output["message"]) == (
        "FAILED",
        "InternalError.Algo",
        "inference crashed",
    )
    assert "results" not in output and "end_time" in output
    assert wait_for(emu, ok_id)["task_status"] == "SUCCEEDED"
    assert emu.stats["images_billed"] == 1


def test_inject_refuses_unknown_kinds_and_details(emu):
    with pytest.raises(ValueError):
        emu.inject("explode")
    with pytest.raises(ValueError):
        emu.inject("http_error", stauts=500)
    with pytest.raises(ValueError):
        emu.inject("drop", count=0)


# -- gateway_html ------------------------------------------------------------------------------


def test_gateway_html_answers_a_page_instead_of_processing(emu):
    emu.inject("gateway_html")
    response = generate(emu, t2i_body())
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert "<title>502 Bad Gateway</title>" in response.text and "Tengine" in response.text
    with pytest.raises(ValueError):
        response.json()
    assert emu.stats["images_billed"] == 0 and emu.requests[-1].status == 502
    emu.inject("gateway_html", status=504, path=SYNTHESIS)
    timeout = create_task(emu)
    assert timeout.status_code == 504 and "504 Gateway Time-out" in timeout.text
    assert emu.tasks == []
    assert generate(emu, t2i_body()).status_code == 200


def test_gateway_html_after_processing_creates_and_bills_then_fails(emu):
    emu.inject("gateway_html", after=True, path=SYNTHESIS)
    response = create_task(emu)
    assert response.status_code == 502 and "Bad Gateway" in response.text
    (task,) = emu.tasks
    assert wait_for(emu, task["id"])["task_status"] == "SUCCEEDED"  # created and run
    emu.inject("gateway_html", after=True, status=504)
    assert generate(emu, t2i_body()).status_code == 504
    assert emu.stats["images_billed"] == 2  # both billed though never answered with JSON
    assert len(emu.served_images) == 2


# -- redirect ----------------------------------------------------------------------------------


def test_redirect_points_a_post_elsewhere_and_processes_nothing(emu):
    emu.inject("redirect")
    url = emu.base_url("ap-southeast-1") + GENERATION
    response = requests.post(url, json=t2i_body(), headers=auth(), allow_redirects=False)
    assert response.status_code == 307
    assert response.headers["Location"] == f"{emu.url}/redirected/ap-southeast-1/api/v1{GENERATION}"
    assert emu.stats["images_billed"] == 0
    # A client that follows it sends the POST again, to a path that is no API.
    emu.inject("redirect")
    followed = generate(emu, t2i_body())
    assert_error(followed, 404, "NotFound")
    assert [r.status for r in emu.requests] == [307, 307, 404]
    assert emu.requests[-1].method == "POST" and emu.requests[-1].json == t2i_body()
    assert emu.stats["images_billed"] == 0


def test_redirect_with_a_status_and_location_of_choice(emu):
    emu.inject("redirect", status=302, location="http://127.0.0.1:9/elsewhere", path="/tasks/")
    response = requests.get(f"{emu.base_url('ap-southeast-1')}/tasks/x", headers=auth(),
                            allow_redirects=False)
    assert (response.status_code, response.headers["Location"]) == (
        302, "http://127.0.0.1:9/elsewhere")
    assert query(emu, "x").status_code == 200


# -- slow_drip ---------------------------------------------------------------------------------


def test_slow_drip_sends_a_result_a_few_bytes_at_a_time(emu):
    url = image_urls(generate(emu, t2i_body(size="928*1664")))[0]
    emu.inject("slow_drip", duration=0.6, chunk=64)
    assert generate(emu, t2i_body()).status_code == 200  # API requests are not its target
    started = time.monotonic()
    with requests.get(url, stream=True) as response:
        first = next(response.iter_content(64))
        first_at = time.monotonic() - started
        rest = b"".join(response.iter_content(4096))
    elapsed = time.monotonic() - started
    assert first_at < 0.3 and 0.55 <= elapsed < 3.0  # the first bytes at once, the rest slowly
    assert first + rest == emu.served_images[url]
    assert int(response.headers["Content-Length"]) == len(first + rest)
    started = time.monotonic()
    download(url)  # consumed: the next download is quick
    assert time.monotonic() - started < 0.5


def test_slow_drip_arrives_in_small_pieces():
    with Emulator(latency=0, rate_limits=False) as emu:
        url = image_urls(generate(emu, t2i_body()))[0]
        emu.inject("slow_drip", duration=0.5, chunk=16)
        conn = http.client.HTTPConnection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
        conn.request("GET", url[len(emu.url):])
        response = conn.getresponse()
        pieces = []
        while True:
            piece = response.read1(1 << 20)
            if not piece:
                break
            pieces.append(piece)
        conn.close()
        assert b"".join(pieces) == emu.served_images[url]
        assert len(pieces) > 10  # many small reads, not one body


# -- oversized ---------------------------------------------------------------------------------


def test_oversized_results_have_more_pixels_than_asked(emu):
    emu.inject("oversized")
    response = generate(emu, t2i_body(size="1664*928"))
    assert response.json()["usage"] == {"width": 1664, "height": 928, "image_count": 1}
    image, _ = download(image_urls(response)[0])
    assert image.size == (5000, 5000)
    assert download(image_urls(generate(emu, t2i_body(size="1664*928")))[0])[0].size == (
        1664, 928)


def test_oversized_task_results(emu):
    emu.inject("oversized", width=3000, height=3100, path=SYNTHESIS)
    task_id = create_task(emu).json()["output"]["task_id"]
    (result,) = wait_for(emu, task_id)["results"]
    assert Image.open(io.BytesIO(requests.get(result["url"]).content)).size == (3000, 3100)


def test_the_new_faults_check_their_details(emu):
    for kind, details in (("gateway_html", {"code": "x"}), ("redirect", {"url": "x"}),
                          ("slow_drip", {"speed": 1}), ("oversized", {"size": 1})):
        with pytest.raises(ValueError):
            emu.inject(kind, **details)


# -- the body cap on every route ---------------------------------------------------------------


def test_upload_bodies_are_capped_with_an_oss_error():
    with Emulator(latency=0, rate_limits=False, upload_body_limit=50000) as emu:
        policy = get_policy(emu).json()["data"]
        assert upload(policy, "small.png", png((400, 400))).status_code == 200
        big = upload(policy, "big.bin", b"\0" * 60000)
        assert big.status_code == 400 and "<Code>EntityTooLarge</Code>" in big.text
        assert big.headers["Connection"] == "close"
        record = emu.requests[-1]
        assert (record.path, record.status, record.body) == ("/oss-upload", 400, b"")
        chunked = requests.post(policy["upload_host"], data=iter([b"x" * 40000] * 2),
                                headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert chunked.status_code == 400 and "EntityTooLarge" in chunked.text
        assert emu.stats["uploads"] == 1


def test_other_routes_are_capped_by_the_body_limit():
    with Emulator(latency=0, rate_limits=False, body_limit=1000) as emu:
        url = image_urls(generate(emu, t2i_body()))[0]
        assert_error(requests.get(url, data=b"x" * 2000), 413, "BadRequest.TooLarge")
        assert_error(requests.post(f"{emu.url}/anything", data=b"x" * 2000), 413,
                     "BadRequest.TooLarge")
        chunked = requests.post(f"{emu.url}/anything", data=iter([b"x" * 800] * 2))
        assert_error(chunked, 413, "BadRequest.TooLarge")
        assert chunked.headers.get("Connection") != "close"  # read to its end: reusable
        # The upload host has its own, larger limit.
        policy = get_policy(emu, key=BEIJING_KEY, region=BJ).json()["data"]
        assert upload(policy, "a.png", png((400, 400))).status_code == 200


def test_a_chunked_body_over_the_limit_is_not_kept(emu):
    body = json.dumps(edit_body(["data:image/png;base64," + "A" * (7 * 1024 * 1024)])).encode()
    pieces = iter([body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)])
    response = requests.post(emu.base_url("ap-southeast-1") + GENERATION, data=pieces,
                             headers=auth())
    assert_error(response, 413, "BadRequest.TooLarge")
    assert emu.requests[-1].body == b"" and emu.requests[-1].json is None


def test_faults_without_a_path_leave_the_quotas_api_alone(emu):
    emu.inject("http_error")
    quotas = requests.get(f"{emu.base_url('ap-southeast-1')}/quotas", headers=auth())
    assert quotas.status_code == 200  # a client reading its limits first does not eat the fault
    assert_error(generate(emu, t2i_body()), 500, "InternalError")
    emu.inject("http_error", status=503, code="ServiceUnavailable", path="/quotas")
    refused = requests.get(f"{emu.base_url('ap-southeast-1')}/quotas", headers=auth())
    assert refused.status_code == 503
