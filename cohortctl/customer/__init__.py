"""Amplitude's cohort API, the customer side: reading cohorts, exports, reconciling members."""
