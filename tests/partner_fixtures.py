"""Fixtures for the embedded partner receiver: filled in with the receiver itself."""
