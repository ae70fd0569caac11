"""Experiments: the ``tsrl`` command line, run configurations and reports.

The saved tutors under ``experiments/tutors`` (``NAME.zip`` with the ``NAME.json`` that ``tsrl teach`` writes) are
package data: :mod:`agents.saved` registers each as the tutor ``NAME`` at the first lookup of a tutor, whether or not
this package is imported.
"""
