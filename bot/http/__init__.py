"""The HTTP door: a Stability-compatible API over the same core as the Discord door."""
