"""Speed machinery only: compiled backends, padding, edge chunks, runtime settings."""
