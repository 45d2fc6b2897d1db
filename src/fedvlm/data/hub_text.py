"""Text data from the Hugging Face Hub (online only): GLUE tasks by name and any dataset
name, with one-line errors (`fedvlm.data.text.load_text` puts them in its schema)."""

import datasets

from fedvlm.data.files import first_line
from fedvlm.errors import DataError

GLUE_TASKS = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "mnli_matched": ("premise", "hypothesis"),
    "mnli_mismatched": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
    "ax": ("premise", "hypothesis"),
}


def load_glue(source: str, split: str) -> tuple[datasets.Dataset, dict[str, str]]:
    """A GLUE task (``glue/<task>``) from the Hugging Face Hub (``nyu-mll/glue``), and the
    columns its text (and pair) are in."""
    task = source.removeprefix("glue/")
    if task == "stsb":
        raise DataError(
            f"{source!r} is a regression task (similarity scores 0-5); load_text supports "
            f"classification and instruction data only"
        )
    if task not in GLUE_TASKS:
        raise DataError(
            f"unknown GLUE task {task!r} in source {source!r}; expected one of "
            f"{', '.join(GLUE_TASKS)}"
        )
    try:
        dataset = datasets.load_dataset("nyu-mll/glue", task, split=split)
    except Exception as err:  # offline, Hub and split errors come in many types
        raise DataError(
            f"could not load {source!r} (nyu-mll/glue, config {task!r}, split {split!r}) "
            f"from the Hugging Face Hub: {first_line(err)}; offline, use a local "
            f"GLUE-format file or directory instead"
        ) from err
    text, pair = GLUE_TASKS[task]
    return dataset, {"text": text, **({"text_pair": pair} if pair else {})}


def load_hub(source: str, split: str) -> datasets.Dataset:
    """`datasets.load_dataset(source, split=split)` with one-line errors."""
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as err:  # Hub / network / builder errors come in many types
        raise DataError(
            f"{source!r} is not an existing file or directory, nor 'crowdflower' or "
            f"'glue/<task>', and loading it as a Hugging Face dataset failed: "
            f"{first_line(err)}"
        ) from err
