"""Tests of bot.ops: running the bot in production."""
