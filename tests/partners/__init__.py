"""Small loopback reconstructions of public Amplitude cohort receivers, from partners.md.

Each module builds an aiohttp app that answers as that receiver does (paths, auth, bodies,
answers, errors, limits) and keeps what it was sent in memory, so a test can check that a
sync ended exact. Knobs break them on purpose (``accept_any_key``, a wrong field name).
"""
