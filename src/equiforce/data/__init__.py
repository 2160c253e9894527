"""Data structures, readers and writers (incl. MD trajectories), neighbours, datasets."""
