"""Running the bot in production: defaults, logs, health, metrics, alerts, diagnosis."""
