"""The command line's terminal: progress while a call runs, and what Ctrl-C does to it."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from ..errors import CancelledError, printable


class TerminalStream:
    """A stream whose text reaches the terminal without control characters (``printable``):
    task ids, messages and prompts from outside can hold escape sequences."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text))

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()


class Console:
    """What the command line shows while a call runs, and what Ctrl-C does to it.

    On a terminal the status redraws one line; piped, it writes a plain line when the
    stage changes. The first Ctrl-C cancels (a queued task is cancelled remotely); the
    second leaves at once (``KeyboardInterrupt``, reported by ``main`` with the task id).
    """

    def __init__(self):
        self.cancel = threading.Event()
        self.task_id: str | None = None
        self.tty = sys.stderr.isatty()
        self._open = False  # a status line is drawn without its line end
        self._shown = None

    def progress(self, progress) -> None:
        self.task_id = progress.task_id or self.task_id
        task = f"  task {printable(progress.task_id)}" if progress.task_id else ""
        if self.tty:
            sys.stderr.write(f"\r{progress.stage:<11} {progress.elapsed:5.1f} s{task}".ljust(70))
            self._open = progress.stage != "done"
            sys.stderr.write("" if self._open else "\n")
        elif (progress.stage, progress.task_id) != self._shown:
            sys.stderr.write(f"{progress.stage} {progress.elapsed:.1f} s{task}\n")
        self._shown = (progress.stage, progress.task_id)
        sys.stderr.flush()

    def say(self, text: str) -> None:
        """A message on a line of its own (without control characters: it may quote the
        service)."""
        sys.stderr.write(("\n" if self._open else "") + printable(text) + "\n")
        sys.stderr.flush()
        self._open = False

    @contextlib.contextmanager
    def ctrl_c(self):
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.cancel.is_set():  # the second Ctrl-C leaves at once
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.say("cancelling… (Ctrl-C again to leave at once)")
            self.cancel.set()

        signal.signal(signal.SIGINT, handler)
        try:
            yield self.cancel
        finally:
            signal.signal(signal.SIGINT, previous)

    def run(self, call, out: Path):
        """``call(on_progress, cancel_event)``; on Ctrl-C after the work has started, keep
        the promise: wait for its images to be saved (a second Ctrl-C leaves them to
        ``qwen-image recover``)."""
        with self.ctrl_c() as cancel:
            try:
                return call(self.progress, cancel)
            except CancelledError as stopped:
                self.task_id = stopped.task_id or self.task_id
                if stopped.background is None:
                    raise
                self.say(f"{stopped.detail} Waiting to save its images to {out} (Ctrl-C "
                         "again to leave; `qwen-image recover` then saves them).")
                while not stopped.background.wait(0.2):
                    pass
                result = stopped.background.result()
                result.notes.append("cancelled after it had started: the images were saved")
                return result
