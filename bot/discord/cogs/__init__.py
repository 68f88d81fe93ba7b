"""One cog per feature area of the Discord layer; each receives its services in `__init__`."""
