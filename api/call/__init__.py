"""One call: sending, following the task, downloading and storing (``generation``), waiting
with progress and cancel (``waiting``), when to poll (``polling``), the account's limits
(``limiter``) and how edit inputs travel (``inputs``)."""
