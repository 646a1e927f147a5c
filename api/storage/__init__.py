"""What is kept on disk: the journal of billed requests (``journal``), the result store
(``store``), the spend guard and its bookings (``budget``, ``charges``) and the learned
task durations (``durations``)."""
