"""Tailor's workers: Celery tasks that train, evaluate and package adapters. torch is imported
inside the tasks' code paths, never by the web process."""
