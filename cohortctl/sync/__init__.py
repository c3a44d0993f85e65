"""The sync engine's parts: the state file (storage, integrity, locks, inventory), and the
user properties of webhook mode."""
