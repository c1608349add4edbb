"""Event sources: the webhook server, the log file tailer and replay."""
