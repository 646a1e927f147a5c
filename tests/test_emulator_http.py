"""The emulator as an HTTP server: recorded requests, keep-alive, chunked bodies, latency,
construction and serve()."""
import http.client
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator
from support.emulator_http import (
    BJ,
    GENERATION,
    SG,
    SMALL,
    STANDARD_EMULATOR,
    assert_error,
    auth,
    data_uri,
    edit_body,
    generate,
    png,
    query,
    t2i_body,
)

EMULATOR = STANDARD_EMULATOR  # the options of this module's ``emulator``/``emu``


# -- recording ---------------------------------------------------------------------------------


def test_requests_are_recorded_with_the_key_redacted(emu):
    image = png((500, 450), (1, 2, 3))
    generate(emu, edit_body([data_uri(image), SMALL], seed=1), headers={"X-Custom": "yes"})
    query(emu, "abc", BEIJING_KEY, BJ)
    record, task_query = emu.requests
    assert (record.method, record.path, record.region, record.status) == (
        "POST",
        f"/{SG}/api/v1{GENERATION}",
        SG,
        200,
    )
    assert record.headers["Authorization"] == "Bearer sk-…pore"
    assert record.headers["authorization"] == record.headers["AUTHORIZATION"]  # any case
    assert record.headers["X-Custom"] == "yes"
    assert record.json["parameters"] == {"seed": 1}
    assert json.loads(record.body) == record.json
    assert re.fullmatch(r"[0-9a-f]{8}", record.key_id) and record.key_id != task_query.key_id
    assert SINGAPORE_KEY not in repr(record) and SINGAPORE_KEY not in repr(emu.stats)
    assert emu.input_images(record) == [image, png()]
    assert (task_query.method, task_query.region, task_query.query) == ("GET", BJ, "")
    assert task_query.headers["Authorization"] == "Bearer sk-…jing"
    assert emu.input_images(task_query) == []
    assert record.time <= task_query.time


def test_keep_alive_connections_are_reused_across_answers(emu):
    conn = http.client.HTTPConnection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    sockets = set()
    requests_made = [
        ("POST", GENERATION, json.dumps(t2i_body()), auth(), 200),
        ("GET", "/tasks/x", None, auth(), 200),
        ("POST", GENERATION, json.dumps(t2i_body(n=3)), auth(), 400),
        ("POST", GENERATION, json.dumps(t2i_body()), auth(BEIJING_KEY), 401),
        ("POST", "/tasks/x/cancel", "", auth(), 400),
    ]
    for method, path, body, headers, status in requests_made:
        conn.request(
            method,
            f"/{SG}/api/v1{path}",
            body=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == status
        assert int(response.getheader("Content-Length")) == len(response.read())
        sockets.add(conn.sock.getsockname())
    url = next(iter(emu.served_images))
    conn.request("GET", url[len(emu.url):])
    response = conn.getresponse()
    assert response.status == 200 and len(response.read()) == int(
        response.getheader("Content-Length")
    )
    sockets.add(conn.sock.getsockname())
    assert len(sockets) == 1  # one connection (one client port) throughout
    conn.close()


def test_chunked_request_bodies_are_read_and_limited(emu):
    payload = json.dumps(t2i_body()).encode()
    response = requests.post(emu.base_url(SG) + GENERATION, headers=auth(),
                             data=iter([payload[:10], payload[10:]]))  # a generator: chunked coding
    assert response.status_code == 200
    assert emu.requests[-1].json == t2i_body()
    big = iter([b"x" * (3 * 1024 * 1024)] * 3)
    too_large = requests.post(emu.base_url(SG) + GENERATION, headers=auth(), data=big)
    assert_error(too_large, 413, "BadRequest.TooLarge")


def test_latency_can_be_changed_while_running(emu):
    emu.set_latency(0.3)
    assert emu.latency == 0.3
    started = time.monotonic()
    assert generate(emu, t2i_body()).status_code == 200
    assert time.monotonic() - started >= 0.3


# -- construction and serve() ------------------------------------------------------------------


def test_only_loopback_hosts_are_accepted():
    from qwen_image_dashscope.api.emulator import serve

    for host in ("0.0.0.0", "192.168.1.10", "example.com", ""):
        with pytest.raises(ValueError):
            Emulator(host=host)
        with pytest.raises(ValueError):
            serve(host=host, port=0)
    with pytest.raises(ValueError):
        Emulator(keys={"sk-x": "us-east-1"})
    with pytest.raises(RuntimeError, match=r"start\(\) the emulator first"):
        _ = Emulator().url  # reading it before start() is refused: no port yet


def test_serve_runs_until_interrupted_and_logs_urls_and_keys(tmp_path):
    # Started with SIGINT ignored, as a background job of a non-interactive shell is (and so
    # this test's own process may be, and its children with it): serve() still takes it.
    script = (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "import sys; sys.path.insert(0, sys.argv[1]); import conftest\n"
        "from qwen_image_dashscope.api.emulator import serve\n"
        "serve(port=0, latency=0)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent)],
                          stderr=subprocess.PIPE, text=True) as process:
        try:
            lines = []
            for _ in range(20):  # tolerate unrelated lines (warnings) before the two we want
                line = process.stderr.readline()
                lines += [line] if "base URL" in line else []
                if len(lines) == 2 or not line:
                    break
            urls = [re.search(r"base URL (\S+)", line).group(1) for line in lines]
            assert urls[0].endswith("/ap-southeast-1/api/v1") and urls[1].endswith(
                "/cn-beijing/api/v1"
            )
            assert SINGAPORE_KEY in lines[0] and BEIJING_KEY in lines[1]
            response = requests.get(urls[1] + "/tasks/x", headers=auth(BEIJING_KEY))
            assert response.json()["output"]["task_status"] == "UNKNOWN"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
