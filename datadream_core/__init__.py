"""DataDream pipeline: all logic as plain functions, importable without Snakemake."""

__version__ = "0.1.0"
