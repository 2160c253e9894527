"""Trajectory analysis: VACF, vibrational spectra, RDF/h(r), stability studies."""
