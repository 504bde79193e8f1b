"""One adapter per venue: URLs, subscriptions and frame routing of its websocket."""
