"""The emulator's storage side: signed, expiring result URLs and temporary uploads."""
import base64
import io
import re
import time

import requests
from PIL import Image

from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY, Emulator
from support.emulator_http import (
    BJ,
    GENERATION,
    SG,
    STANDARD_EMULATOR,
    assert_error,
    auth,
    create_task,
    download,
    edit_body,
    expected_edit,
    generate,
    get_policy,
    image_urls,
    pattern_png,
    png,
    query,
    t2i_body,
    upload,
    wait_for,
)

EMULATOR = STANDARD_EMULATOR  # the options of this module's ``emulator``/``emu``


# -- result URLs -------------------------------------------------------------------------------


def test_result_urls_expire_and_need_their_signature():
    with Emulator(latency=0, rate_limits=False, result_ttl=0.4) as emu:
        response = generate(emu, t2i_body())
        url = image_urls(response)[0]
        expires = int(re.search(r"Expires=(\d+)", url).group(1))
        assert time.time() < expires <= time.time() + 1.5
        download(url)
        tampered = re.sub(r"Signature=[^&]+", "Signature=AAAA", url)
        forged = requests.get(tampered)
        assert forged.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in forged.text
        assert requests.get(url.split("?")[0]).status_code == 403  # unsigned
        assert requests.get(f"{emu.url}/results/{'0' * 32}.png").status_code == 404
        head = requests.head(url)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(
            emu.served_images[url]
        )
        task_id = create_task(emu).json()["output"]["task_id"]
        assert wait_for(emu, task_id)["task_status"] == "SUCCEEDED"
        time.sleep(0.5)
        expired = requests.get(url)
        assert expired.status_code == 403
        assert expired.headers["Content-Type"] == "application/xml"
        assert (
            "<Code>AccessDenied</Code>" in expired.text
            and "<Message>Request has expired.</Message>" in expired.text
        )
        # The service forgets the task and cannot download the URL either.
        assert query(emu, task_id).json()["output"]["task_status"] == "UNKNOWN"
        assert_error(generate(emu, edit_body([url])), 400, "InvalidURL", "download failed")


def test_upload_then_use_as_oss_resource(emu):
    response = get_policy(emu)
    assert response.status_code == 200
    policy = response.json()["data"]
    assert set(policy) == {"policy", "signature", "upload_dir", "upload_host", "oss_access_key_id",
                           "x_oss_object_acl", "x_oss_forbid_overwrite", "expire_in_seconds",
                           "max_file_size_mb", "capacity_limit_mb"}
    assert (
        policy["upload_host"] == f"{emu.url}/oss-upload" and policy["expire_in_seconds"] == 172800
    )
    image = pattern_png((640, 640))
    uploaded = upload(policy, "cat.png", image)
    assert uploaded.status_code == 200 and uploaded.content == b""
    oss = f"oss://{policy['upload_dir']}/cat.png"
    resolve = {"X-DashScope-OssResourceResolve": "enable"}
    response = generate(emu, edit_body([oss], seed=1), BEIJING_KEY, BJ, headers=resolve)
    assert response.status_code == 200
    out = download(image_urls(response)[0])[0].convert("RGB")
    assert (
        out.tobytes()
        == expected_edit([Image.open(io.BytesIO(image))], (1024, 1024), 1, 0).tobytes()
    )
    record = emu.requests[-2]  # the generation; the download came after it
    assert record.path.endswith(GENERATION) and emu.input_images(record) == [image]
    upload_record = next(r for r in emu.requests if r.path == "/oss-upload")
    assert (
        upload_record.method == "POST"
        and upload_record.status == 200
        and image in upload_record.body
    )
    assert emu.stats["uploads"] == 1

    # Bound to the model of the policy, and needs the header.
    assert_error(
        generate(emu, edit_body([oss], model="qwen-image-edit"), BEIJING_KEY, BJ, headers=resolve),
        400,
        "InvalidURL",
        "download failed",
    )
    assert_error(generate(emu, edit_body([oss]), BEIJING_KEY, BJ), 400, "InvalidURL")


def test_uploads_are_bound_to_the_account():
    other_bj = "sk-emulator-beijing-two"
    with Emulator(latency=0, rate_limits=False, keys={BEIJING_KEY: BJ, other_bj: BJ}) as emu:
        policy = get_policy(emu).json()["data"]
        assert upload(policy, "a.png", png()).status_code == 200
        body = edit_body([f"oss://{policy['upload_dir']}/a.png"])
        resolve = {"X-DashScope-OssResourceResolve": "enable"}
        assert generate(emu, body, BEIJING_KEY, BJ, headers=resolve).status_code == 200
        assert_error(
            generate(emu, body, other_bj, BJ, headers=resolve), 400, "InvalidURL", "download failed"
        )


def test_upload_policy_and_form_are_checked(emu):
    assert_error(get_policy(emu, key=SINGAPORE_KEY, region=SG), 404, "NotFound", "cn-beijing")
    assert_error(
        get_policy(emu, model="no-such-model"), 400, "InvalidParameter", "Model not exist."
    )
    assert_error(
        requests.get(
            f"{emu.base_url(BJ)}/uploads", params={"action": "list"}, headers=auth(BEIJING_KEY)
        ),
        400,
        "InvalidParameter",
    )
    policy = get_policy(emu).json()["data"]
    cases = [
        ({"Signature": "bad"}, 403, "SignatureDoesNotMatch"),
        ({"OSSAccessKeyId": "LTAI-other"}, 403, "InvalidAccessKeyId"),
        ({"policy": base64.b64encode(b"{}").decode()}, 403, "InvalidAccessKeyId"),
        ({"key": "elsewhere/a.png"}, 403, "AccessDenied"),
    ]
    for overrides, status, code in cases:
        response = upload(policy, "a.png", png(), **overrides)
        assert response.status_code == status, overrides
        assert f"<Code>{code}</Code>" in response.text
    assert upload(policy, "a.png", png()).status_code == 200
    again = upload(policy, "a.png", png())
    assert again.status_code == 409 and "<Code>FileAlreadyExists</Code>" in again.text
    assert upload(policy, "b.png", png(), success_action_status="204").status_code == 204
    not_multipart = requests.post(
        policy["upload_host"], data=b"raw", headers={"Content-Type": "image/png"}
    )
    assert not_multipart.status_code == 400
    assert emu.stats["uploads"] == 2
