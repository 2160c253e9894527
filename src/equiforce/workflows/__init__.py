"""Studies that combine layers (training, MD, analysis)."""
