"""One call: booking, sending (a lost answer's task found in the task list), following the
task, downloading, storing and settling (``generation``), waiting with progress and cancel
(``waiting``), when to poll (``polling``), the account's limits (``limiter``) and how edit
inputs travel (``inputs``)."""
