"""Credentials used by the tests; none of them may ever appear in command output."""

API_KEY = "test-api-key-7f3a9c51e2"
SECRET_KEY = "test-secret-key-4b2e81d0aa"
PARTNER_KEY = "partner-key-93d1c7b6f0"
PARTNER_SECRET = "partner-secret-5a8e2f9c11"
SECRETS = (API_KEY, SECRET_KEY, PARTNER_KEY, PARTNER_SECRET)
