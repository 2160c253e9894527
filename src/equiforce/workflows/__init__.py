"""Studies that combine layers: run MD (md/), then analyse it (analysis/)."""
