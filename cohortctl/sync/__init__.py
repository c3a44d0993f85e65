"""The sync engine's parts: the state file (storage, integrity, locks, inventory)."""
