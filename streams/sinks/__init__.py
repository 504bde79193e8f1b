"""Where alerts go: stdout, webhook, Alertmanager, with a bounded retry queue."""
