"""Experiment configs and the scripts that run them (reproduce.py, benchmark.py, ...); a package so that tests import the scripts."""
