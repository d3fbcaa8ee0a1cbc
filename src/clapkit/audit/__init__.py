"""Audits of zero-shot claims: caption/label leakage (:mod:`.leakage`)."""
