"""Celery workers that drive markets through their phases."""
