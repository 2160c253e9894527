"""Trajectory analysis: VACF, spectra, RDF/h(r), stability tables (never runs MD)."""
