"""The quickstart notebook runs top to bottom and shows what it says: a Student that learns without label noise, and
at label noise 0.30 the oracle's paired gain over uniform weights, with the library's figures.

The default run executes it on a tiny grid (its parameters cell given another config); the scientific check, at the
notebook's own size, is marked science (and slow): left out of the default run, run by ``pytest -m science`` and CI."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "experiments" / "notebooks" / "quickstart.ipynb"


def run_notebook(folder: Path, parameters: str | None = None) -> tuple[list[dict], str]:
    """Execute the notebook in ``folder`` (its parameters cell replaced by ``parameters``, if given); every output and
    the standard output printed."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    if parameters is not None:
        (cell,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        cell.source = parameters
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs if output.get("name") == "stdout")
    return outputs, text


def test_quickstart_notebook_runs_top_to_bottom_on_a_tiny_grid(tmp_path):
    settings = yaml.safe_load((ROOT / "experiments" / "configs" / "quickstart.yaml").read_text())
    sizes = {"train_size": 128, "val_size": 64, "test_seen_size": 64, "test_unseen_size": 64}
    settings["env"] |= {"epochs": 2, "dataset_options": settings["env"]["dataset_options"] | sizes}
    settings["seeds"] = [0, 1]
    config = tmp_path / "tiny_quickstart.yaml"
    config.write_text(yaml.safe_dump(settings))
    outputs, text = run_notebook(tmp_path, f"CONFIG, WORKERS = {str(config)!r}, 1")
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum(output.output_type == "display_data" for output in outputs) == 2, "both figures are shown"
    assert re.search(r"test AUC: seen manipulations \d\.\d+", text)
    for tutor in settings["tutors"]:
        assert re.search(rf"^ +{tutor} +[+-]\d\.\d+ ", text, re.MULTILINE), f"{tutor}'s paired difference is printed"


@pytest.mark.slow
@pytest.mark.science
def test_quickstart_notebook_shows_a_learning_student_and_the_oracles_paired_gain(tmp_path):
    outputs, text = run_notebook(tmp_path)
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum(output.output_type == "display_data" for output in outputs) == 2, "both figures are shown"

    seen = float(re.search(r"test AUC: seen manipulations (\d\.\d+)", text).group(1))
    assert seen >= 0.8, "without label noise the Student learns"
    # The oracle is a reference, outside the family a verdict is given in: its interval alone says it gains.
    oracle = re.search(r"^ +oracle +([+-]\d\.\d+) \[([+-]\d\.\d+), ([+-]\d\.\d+)\].* not in the family$", text, re.MULTILINE)
    assert oracle is not None and float(oracle.group(2)) > 0, "the oracle's paired gain over uniform excludes 0"
    assert re.search(r"^ +noise_mentor +[+-]\d\.\d+ \[", text, re.MULTILINE), "the taught tutor is compared too"
