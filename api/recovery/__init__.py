"""Recovery of lost answers: finding a task whose creation answer was lost (``finder``) and
finishing what the journal left open (``unfinished``, ``qwen-image recover``)."""
