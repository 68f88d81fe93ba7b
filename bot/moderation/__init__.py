"""Moderation: what a prompt may not ask for, decided by pure functions."""
