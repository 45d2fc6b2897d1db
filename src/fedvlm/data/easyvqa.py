"""The easy-VQA dataset (64x64 shapes with colour/shape/yes-no questions) as a `datasets.Dataset`.

Everything comes from the installed PyPI package `easy_vqa`, which ships the images and
questions, so nothing is downloaded. Images are referenced by file path under a
`datasets.Image()` feature: building the dataset never decodes a PNG, decoding happens
only when a row's `image` is accessed.
"""

from __future__ import annotations

import datasets
import pyarrow as pa

from fedvlm.errors import DataError

EASYVQA_SPLITS = ("train", "test")

EASYVQA_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "image_id": datasets.Value("int64"),
    }
)


def easyvqa_question_type(question: str) -> str:
    """Classify an easy-VQA question as "color", "shape" or "yes/no".

    The package generates three families of questions (checked against every question in
    both splits):

    - colour: "what color is the shape?", "what color is the <shape>?",
      "what is the color of the shape?", "what is the color of the <shape>?"
    - shape: "what is the <color> shape?", "what shape is in the image?",
      "what shape is present?", "what shape does the image contain?"
    - yes/no: every other question ("is there a ...", "does the image contain ...", ...)

    So a "what" question is about colour iff it mentions "color", and about shape otherwise.
    """
    text = question.strip().lower()
    if not text.startswith("what"):
        return "yes/no"
    return "color" if "color" in text else "shape"


def load_easyvqa(split: str) -> datasets.Dataset:
    """Load one split of easy-VQA from the installed `easy_vqa` package.

    Args:
        split: "train" (38,575 questions) or "test" (9,673 questions).

    Returns:
        A dataset with columns `image` (`datasets.Image()`, built from file paths, decoded
        lazily to a 64x64 RGB PIL image), `question`, `answer`, `question_type`
        ("color", "shape" or "yes/no", see `easyvqa_question_type`) and `image_id`.

    Raises:
        DataError: for an unknown split, or if a question refers to an image id that the
            package does not ship.
    """
    import easy_vqa  # imported here so that importing fedvlm.data does not require it

    if split == "train":
        texts, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        texts, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise DataError(
            f"unknown split {split!r} for source 'easyvqa'; available splits: "
            f"{', '.join(EASYVQA_SPLITS)}"
        )

    image_paths = []
    for row, image_id in enumerate(image_ids):
        path = paths.get(image_id)
        if path is None:
            raise DataError(
                f"easy_vqa {split} question {row} refers to image id {image_id}, but the "
                f"package has no {image_id}.png in its {split} images; reinstall easy-vqa"
            )
        image_paths.append(path)

    # One arrow table, then cast: the Image feature's arrow cast turns the path column into
    # {"bytes": None, "path": ...} structs in one vectorised step (``Dataset.from_dict``
    # would encode every value in Python first: 0.4 s a split for the same table).
    table = pa.table({
        "image": pa.array(image_paths, pa.string()),
        "question": pa.array(list(texts), pa.string()),
        "answer": pa.array(list(answers), pa.string()),
        "question_type": pa.array([easyvqa_question_type(q) for q in texts], pa.string()),
        "image_id": pa.array([int(i) for i in image_ids], pa.int64()),
    })
    plain = EASYVQA_FEATURES.copy()
    plain["image"] = datasets.Value("string")
    dataset = datasets.Dataset(table, info=datasets.DatasetInfo(features=plain))
    return dataset.cast_column("image", datasets.Image())
