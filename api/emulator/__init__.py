"""A local stand-in for Alibaba Cloud DashScope's Qwen-Image service, over real HTTP.

It encodes the service's behaviour (from the vendor's public API reference) independently
of the pack's client code, so that testing the client against it proves something.
Standard library and Pillow only; loopback addresses only.

    with Emulator(latency=0.1) as emu:
        base = emu.base_url("ap-southeast-1")  # f"{emu.url}/ap-southeast-1/api/v1"
        ...  # Authorization: Bearer SINGAPORE_KEY there, BEIJING_KEY in cn-beijing

Where each behaviour lives (each module's docstring states its rules):

    emulator.py   the Emulator facade: options, life cycle, inspection, request path, body limit
    service.py    the API endpoints
    catalog.py    the models served, by family, and each one's rules
    validate.py   request bodies to jobs, or the error the service answers (errors.py)
    sizes.py      parameters.size under each model's size rule
    answers.py    the shapes of successful answers per family (v1, v2, qima)
    rules.py      the rules as data: regions, keys, sizes, limits, error codes
    images.py     the deterministic result images (text to image; edits from their inputs)
    tasks.py      the async task scheduler (queue per key and model) and task documents
    tasklist.py   the task list of an account (GET {base}/tasks)
    limits.py     per-model quotas, the rate limits that obey them, sync concurrency
    accounts.py   API keys, their regions and accounts, authentication
    uploads.py    signed result URLs, temporary uploads and oss:// resolution
    faults.py     injectable faults (emu.inject)
    http.py       the HTTP server, request reading, recorded requests, JSON and XML answers
    state.py      the lock, settings and statistics every part shares

Inspection: emu.requests (RecordedRequest: method, path, query, region, headers with the
Authorization redacted to "Bearer sk-…last4", body, json, time, key_id = sha256(key)[:8],
status, notes), emu.input_images(recorded) (ValueError for an item it cannot resolve),
emu.served_images {url: png}, emu.tasks, emu.stats {requests, tasks_created, images_billed,
rate_limited (429s answered), task_queries, uploads, faults_fired, prompts_truncated,
errors {code: n}, max_concurrent_tasks, max_outstanding_tasks, max_requests_per_second,
max_concurrent_calls (synchronous; these four keyed by (key_id, model))}, emu.faults,
emu.reset_stats(), emu.clear_faults(), emu.set_latency(seconds).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from .emulator import Emulator
from .http import RecordedRequest
from .rules import BEIJING_KEY, REGIONS, SINGAPORE_KEY

__all__ = ["BEIJING_KEY", "SINGAPORE_KEY", "Emulator", "RecordedRequest", "serve"]

log = logging.getLogger(__name__)


def serve(host: str = "127.0.0.1", port: int = 8765, **options: Any) -> None:
    """Run an emulator until Ctrl-C (SIGINT); options are Emulator's (latency, rate_limits,
    ...)."""
    emu = Emulator(host=host, port=port, **options)  # refuses a non-loopback host
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # A process started in the background by a non-interactive shell (a script's `cmd &`, a
    # test runner launched so) inherits SIGINT ignored, and Python then leaves it ignored:
    # Ctrl-C / kill -INT would not stop the emulator. It takes SIGINT for the time it serves.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        with emu:
            for region in REGIONS:
                # Keys of the emulator only (the defaults are published in rules.py), not
                # secrets.
                keys = ", ".join(emu.keys_of(region)) or "(none)"
                log.info("DashScope emulator %s: base URL %s  key %s", region,
                         emu.base_url(region), keys)
            log.info("Ctrl-C stops it.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:  # also one that comes before the loop: it stops all the same
        log.info("DashScope emulator stopped.")
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
