"""The one error the rules at the door raise: input a member can fix."""

from __future__ import annotations


class BadInput(ValueError):
    """Input a member can fix; the message is shown to them as it is."""
