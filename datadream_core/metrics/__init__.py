"""Metrics on generated images: Frechet distances per class and per dataset."""
