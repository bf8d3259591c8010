"""The one marker of an error the user can fix.

Every error class whose message tells a user what to change (a setting, a file, an
architecture, a run directory) derives from :class:`UserError`; the command line
prints such an error as one line and exits 2. Anything else reaching the command
line is a bug of this engine and is reported as one, with its traceback kept.
It lives in the lowest layer that raises user-facing errors, so every layer above
can mark its own.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message names what to change."""
