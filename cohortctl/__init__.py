"""cohortctl: Amplitude behavioral cohorts from the command line, for customers and partners."""

__version__ = "0.1.0"
