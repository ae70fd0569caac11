"""Experiments: the ``tsrl`` command line, run configurations and reports.

Every tutor saved under ``experiments/tutors`` (``NAME.zip`` with the ``NAME.json`` that ``tsrl teach`` writes) is
registered as the tutor ``NAME`` when this package is imported.
"""

from pathlib import Path

from agents import register_saved_tutor

SAVED_TUTORS_DIR = Path(__file__).parent / "tutors"

for _settings in sorted(SAVED_TUTORS_DIR.glob("*.json")):
    register_saved_tutor(_settings.stem, _settings.with_suffix(".zip"))
