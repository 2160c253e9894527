"""Data structures, readers, neighbour lists and datasets."""
