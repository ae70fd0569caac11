"""Experiments: the ``tsrl`` command line, run configurations and reports."""
