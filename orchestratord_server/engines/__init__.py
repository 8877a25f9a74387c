"""Embedded engine processes the daemon starts and supervises, and the models they run."""
