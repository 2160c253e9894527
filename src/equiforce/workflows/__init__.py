"""Studies that combine layers: training, MD and analysis (stability study, learning curve)."""
