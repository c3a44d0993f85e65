"""Amplitude's Cohort Webhooks: default bodies, FreeMarker templates, sending and receiving."""
