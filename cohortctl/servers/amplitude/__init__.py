"""The embedded fake of Amplitude's cohort API.

``app`` (routes and handlers), ``validation`` (request checks, error shape), ``store``
(cohorts and users), ``traffic`` (request log), ``users`` (a users file for ``serve``).
"""
