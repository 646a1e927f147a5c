"""Talking to DashScope: HTTP with the no-duplicate rule (``transport``), the one retry loop
(``retry``), the wire format (``wire``), error answers as exceptions (``answers``), result
downloads (``download``), temporary uploads (``uploads``), the quotas API (``quotas``) and
which region a key belongs to (``keycheck``)."""
