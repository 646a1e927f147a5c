"""Three ComfyUI-like processes share one key against one DashScope: nothing lost, nothing twice.

Each process has its own limiter (2 tasks at once, 2 requests a second), so together they
send three times what the account allows; the service answers the excess with 429, which
every process must absorb by backing off. Each process runs a text-to-image node (4 images,
its own seeds) and an edit node side by side (tests/support/multiprocess_runner.py).
"""
import collections
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

RUNNER = Path(__file__).resolve().parent / "support" / "multiprocess_runner.py"
PROCESSES = 3
BATCH = 4
DEADLINE = 120.0  # seconds for the whole test; a hung process fails it


def start(index: int, emu: Emulator, store: Path, home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DASHSCOPE_") and k not in ("QWEN_IMAGE_STORE_DIR", "PYTHONPATH")}
    env.update(DASHSCOPE_HTTP_BASE_URL=emu.base_url("ap-southeast-1"),
               DASHSCOPE_API_KEY=SINGAPORE_KEY, QWEN_IMAGE_STORE_DIR=str(store), HOME=str(home))
    config = {"prompt": f"process {index}: a harbour at night", "seed": 100 * index,
              "batch": BATCH, "edit": True}
    return subprocess.Popen([sys.executable, str(RUNNER), json.dumps(config)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(home))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_three_processes_one_key_every_image_saved_once(tmp_path):
    with Emulator(latency=0.3, rate_limits=True) as emu:
        stores = [tmp_path / f"store{i}" for i in range(PROCESSES)]
        homes = [tmp_path / f"home{i}" for i in range(PROCESSES)]
        for home in homes:
            home.mkdir()
        processes = [start(i, emu, stores[i], homes[i]) for i in range(PROCESSES)]
        hung = threading.Timer(DEADLINE, lambda: [p.kill() for p in processes])
        hung.start()
        started = time.monotonic()
        try:
            for process in processes:  # every process has loaded the pack ...
                assert process.stdout.readline().strip() == "ready", process.stderr.read()
            for process in processes:  # ... then all start sending at once
                process.stdin.write("go\n")
                process.stdin.flush()
            outputs = [None] * PROCESSES

            def collect(index):  # all at once: a full stderr pipe must not stall a process
                outputs[index] = processes[index].communicate()

            readers = [threading.Thread(target=collect, args=(i,)) for i in range(PROCESSES)]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join()
        finally:
            hung.cancel()
            for process in processes:
                if process.poll() is None:
                    process.kill()
        elapsed = time.monotonic() - started
        stats, tasks, requests = emu.stats, emu.tasks, emu.requests
        served = emu.served_images

    assert elapsed < DEADLINE, f"a process hung ({elapsed:.0f} s)"
    for process, (_out, err) in zip(processes, outputs, strict=False):
        assert process.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for result in results:
        assert result["t2i"]["images"] == BATCH and result["edit"]["images"] == 1
        assert result["t2i"]["info"]["failures"] == [] and result["edit"]["info"]["failures"] == []

    # The account's limits were exceeded by the three together, and the 429s were absorbed.
    assert stats["rate_limited"] > 0
    assert stats["errors"].get("Throttling.RateQuota", 0) == stats["rate_limited"]

    # No task created twice: one per distinct (prompt, seed), as many as images asked for.
    expected_tasks = PROCESSES * BATCH
    created = collections.Counter((t["request"]["input"]["prompt"], t["seed"]) for t in tasks)
    assert stats["tasks_created"] == len(tasks) == expected_tasks
    assert set(created.values()) == {1}
    assert {seed for _, seed in created} == {100 * i + k for i in range(PROCESSES)
                                             for k in range(BATCH)}
    edits = [r for r in requests if r.method == "POST" and r.path.endswith("/generation")
             and r.status == 200]
    assert len(edits) == PROCESSES
    assert stats["images_billed"] == expected_tasks + PROCESSES == len(served)

    # Every image the service made is on disk, once, with its sidecar, in its process's store.
    stored = {}
    for index, store in enumerate(stores):
        pngs = sorted(store.rglob("*.png"))
        sidecars = sorted(p for p in store.rglob("*.json"))
        assert len(pngs) == BATCH + 1 and len(sidecars) == BATCH + 1, (index, pngs, sidecars)
        assert [p.with_suffix(".json") for p in pngs] == sidecars
        for png in pngs:
            meta = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
            assert meta["prompt"].startswith(f"process {index}:")
            assert digest(png.read_bytes()) == digest(served[meta["url"]])
            stored[meta["url"]] = png
    assert set(stored) == set(served)
