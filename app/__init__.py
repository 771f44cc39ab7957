"""Tailor's web process: pages, JSON API and services. Never imports torch."""
