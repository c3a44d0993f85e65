"""The partner side of Amplitude's cohort sync: payloads, templates, destinations, webhooks."""
