"""The partner reconstruction: ``app`` (receiver routes), ``validation``, ``store`` (SQLite),
``webhooks`` (Cohort Webhooks receiver), ``forward`` (the recording proxy)."""
