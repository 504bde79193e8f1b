"""Unified accounts as columns: the book, its vectorised margin maths and liquidation engine."""
