"""The package version (one place; pyproject reads it, the package re-exports it)."""

__version__ = "0.1.0"
