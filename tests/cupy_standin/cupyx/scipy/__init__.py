"""cupyx.scipy on the stand-in: `special` only."""

from . import special  # noqa: F401
