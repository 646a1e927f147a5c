"""The journal of billed requests: written before sending, folded, claimed, pruned, shared."""
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qwen_image_dashscope.api.errors import (
    AmbiguousRequestError,
    ConfigurationError,
    QwenImageError,
)
from qwen_image_dashscope.api.storage import journal as journal_module
from qwen_image_dashscope.api.storage.journal import (
    CREATED,
    JOURNAL_NAME,
    LOST,
    STORED,
    Journal,
)

REPO = Path(__file__).resolve().parents[1]


def begin(journal, **overrides):
    fields = dict(model="qwen-image-plus", region="ap-southeast-1",
                  base_url="http://127.0.0.1:1/ap-southeast-1/api/v1", interface="async",
                  key="0123456789abcdef", fingerprint="f" * 64,
                  request={"prompt": "a cat", "n": 1, "seed": 3, "family": "text-to-image"},
                  store="/tmp/results", path="/services/aigc/text2image/image-synthesis")
    return journal.begin(**{**fields, **overrides})


@pytest.fixture
def journal(tmp_path):
    return Journal.in_folder(tmp_path / "dashscope")


def records(journal):
    return [json.loads(line) for line in journal.path.read_text().splitlines()]


def test_an_entry_is_on_disk_before_the_call_returns_and_updates_fold_into_it(journal):
    entry = begin(journal)

    [written] = records(journal)
    assert written["op"] == "begin" and written["id"] == entry.id
    assert written["status"] == "sending" and written["request"]["prompt"] == "a cat"
    assert journal.path.name == JOURNAL_NAME
    assert oct(journal.path.stat().st_mode & 0o777) == "0o600"

    journal.claim(entry.id, "t-1")
    journal.stored(entry.id, ["/tmp/results/a.png"])
    folded = journal.entries()[entry.id]
    assert (folded.task_id, folded.status, folded.saved) == ("t-1", STORED,
                                                             ["/tmp/results/a.png"])
    assert folded.done
    assert journal.claimed() == {"t-1": entry.id}


def test_a_torn_last_line_from_a_crash_is_skipped(journal):
    entry = begin(journal)
    with open(journal.path, "ab") as handle:
        handle.write(b'{"op": "set", "id": "' + entry.id.encode() + b'", "set": {"sta')

    assert journal.entries()[entry.id].status == "sending"
    # Appending after the torn line still works.
    journal.lost(entry.id, AmbiguousRequestError("no answer"), time.time())
    assert journal.entries()[entry.id].status == LOST


def test_a_task_id_is_claimed_by_one_entry_only(journal):
    first, second = begin(journal), begin(journal)

    assert journal.claim(first.id, "task-x")
    assert not journal.claim(second.id, "task-x")
    assert journal.claim(first.id, "task-x")  # claiming one's own again is fine
    assert journal.entries()[second.id].task_id is None


def test_done_entries_older_than_48_hours_are_pruned_and_unfinished_ones_kept(journal):
    old_done, old_open, new_done = begin(journal), begin(journal), begin(journal)
    long_ago = time.time() - 49 * 3600
    journal._update(old_done.id, time=long_ago, status=STORED)  # sent 49 hours ago
    journal._update(old_open.id, time=long_ago, task_id="t-open", status=CREATED)
    journal.failed(new_done.id, QwenImageError("refused"))
    journal.learn_key_id("0123456789abcdef", "http://x/api/v1", "key-id-1")

    assert journal.prune() == 1

    assert set(journal.entries()) == {old_open.id, new_done.id}
    assert len(records(journal)) == 3  # one line per entry, and the learned key id
    assert journal.key_id("0123456789abcdef", "http://x/api/v1") == "key-id-1"
    assert journal.unfinished(within=72 * 3600) == [journal.entries()[old_open.id]]
    assert journal.unfinished(within=24 * 3600) == []


def test_a_growing_file_is_compacted_on_the_next_begin(journal, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 4096)
    entries = [begin(journal) for _ in range(3)]
    for round_ in range(20):
        for entry in entries:
            journal._update(entry.id, outcome=f"round {round_}")
    assert journal.path.stat().st_size > 4096

    begin(journal)

    assert len(records(journal)) == 4
    assert journal.entries()[entries[0].id].outcome == "round 19"


def test_a_symlinked_lock_file_is_refused_not_followed(journal, tmp_path):
    target = tmp_path / "elsewhere"
    journal.path.parent.mkdir(parents=True)
    Path(f"{journal.path}.lock").symlink_to(target)

    with pytest.raises(ConfigurationError, match="cannot be used"):
        begin(journal)

    assert not target.exists()


def test_an_unusable_folder_refuses_begin_but_updates_never_raise(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="QWEN_IMAGE_JOURNAL_DIR"):
        begin(Journal.in_folder(blocked))

    journal = Journal.in_folder(tmp_path / "ok")
    entry = begin(journal)
    journal.path.unlink()
    journal.path.mkdir()  # the file cannot be opened any more
    journal.stored(entry.id, [])  # logged, not raised
    assert "Could not write to the journal" in caplog.text


def test_processes_share_the_journal_without_losing_a_line(journal):
    script = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location(
            "qwen_image_dashscope", {str(REPO / "__init__.py")!r},
            submodule_search_locations=[{str(REPO)!r}])
        module = importlib.util.module_from_spec(spec)
        sys.modules["qwen_image_dashscope"] = module
        spec.loader.exec_module(module)
        from qwen_image_dashscope.api.storage.journal import Journal
        journal = Journal({str(journal.path)!r})
        for i in range(25):
            entry = journal.begin(model="m", region="r", base_url="b", interface="async",
                                  key="k", fingerprint="f", request={{"prompt": "p"}},
                                  store=None)
            journal._update(entry.id, task_id=f"{{sys.argv[1]}}-{{i}}", status="created")
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert [p.wait(timeout=60) for p in processes] == [0, 0, 0, 0]

    entries = journal.entries()
    assert len(entries) == 100
    assert {e.task_id for e in entries.values()} == {f"{n}-{i}" for n in range(4)
                                                      for i in range(25)}


def test_the_journal_lives_beside_the_ledger_unless_its_folder_is_configured(tmp_path):
    from qwen_image_dashscope.api import Config, QwenImageClient

    def journal_path(environ):
        config = Config.resolve("ap-southeast-1", api_key="sk-journal-test-1234",
                                environ={"HOME": str(tmp_path / "home"), **environ})
        with QwenImageClient(config) as client:
            return client.journal.path

    assert journal_path({}) == tmp_path / "home" / ".dashscope" / JOURNAL_NAME
    assert journal_path({"QWEN_IMAGE_BUDGET_FILE": str(tmp_path / "b" / "l.json")}) == (
        tmp_path / "b" / JOURNAL_NAME)
    assert journal_path({"QWEN_IMAGE_JOURNAL_DIR": str(tmp_path / "j")}) == (
        tmp_path / "j" / JOURNAL_NAME)


def test_past_the_compaction_size_of_recent_entries_not_every_request_rewrites_the_file(
        tmp_path):
    journal = Journal.in_folder(tmp_path / "j")
    filler = {"prompt": "x" * 2000, "n": 1}
    while not journal.path.exists() or journal.path.stat().st_size <= journal_module.COMPACT_BYTES:
        journal.begin(model="m", region="r", base_url="b", interface="async", key="k",
                      fingerprint="f", request=filler, store=None)
    rewrites, inode = 0, journal.path.stat().st_ino
    for _ in range(50):  # every entry is recent: a compaction keeps them all
        journal.begin(model="m", region="r", base_url="b", interface="async", key="k",
                      fingerprint="f", request=filler, store=None)
        if journal.path.stat().st_ino != inode:
            rewrites, inode = rewrites + 1, journal.path.stat().st_ino
    assert rewrites == 1


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_journal_folder_others_may_write_is_refused(tmp_path, mode):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    journal = Journal.in_folder(folder)
    with pytest.raises(ConfigurationError) as caught:
        journal.begin(model="m", region="r", base_url="b", interface="async", key="k",
                      fingerprint="f", request={}, store=None)
    assert "writable by other users" in str(caught.value) and "QWEN_IMAGE_JOURNAL_DIR" in str(
        caught.value)
    assert not journal.path.exists()
