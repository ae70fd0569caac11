"""The quickstart notebook runs top to bottom and shows what it says: a Student that learns without label noise, and
at label noise 0.30 the oracle's paired gain over uniform weights, with the library's figures."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "experiments" / "notebooks" / "quickstart.ipynb"

pytestmark = pytest.mark.slow


def test_quickstart_notebook_shows_a_learning_student_and_the_oracles_paired_gain(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum(output.output_type == "display_data" for output in outputs) == 2, "both figures are shown"
    text = "".join(output.get("text", "") for output in outputs if output.get("name") == "stdout")

    seen = float(re.search(r"test AUC: seen manipulations (\d\.\d+)", text).group(1))
    assert seen >= 0.8, "without label noise the Student learns"
    # The oracle is a reference, outside the family a verdict is given in: its interval alone says it gains.
    oracle = re.search(r"^ +oracle +([+-]\d\.\d+) \[([+-]\d\.\d+), ([+-]\d\.\d+)\].* not in the family$", text, re.MULTILINE)
    assert oracle is not None and float(oracle.group(2)) > 0, "the oracle's paired gain over uniform excludes 0"
    assert re.search(r"^ +noise_mentor +[+-]\d\.\d+ \[", text, re.MULTILINE), "the taught tutor is compared too"
