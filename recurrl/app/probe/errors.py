"""The probe's one error type, shared by its modules."""


class ProbeError(ValueError):
    """A probe that cannot run as asked (printed as one line, exit 2)."""
