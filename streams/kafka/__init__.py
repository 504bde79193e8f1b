"""Kafka plumbing: the embedded broker, client security, publishing, replay through Kafka."""
