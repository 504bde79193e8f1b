"""Ingest: received frames → wire parsers → validated events → batches; local books, quotes, venue tables."""
