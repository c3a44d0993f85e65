"""Conformance: the cases ``cohortctl check`` runs against a partner, and their reports."""
