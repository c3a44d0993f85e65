"""Embedded servers: a fake of Amplitude's cohort API and a reference partner receiver."""
