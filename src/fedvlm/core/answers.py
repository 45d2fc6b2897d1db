"""Answer processing and VQA accuracy as the official VQA evaluation computes them (pure Python).

The official evaluation (https://visualqa.org/evaluation.html and its ``vqaEval.py``)
processes an answer in two steps, reproduced here rule for rule:

1. punctuation (`process_punctuation`): each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``
   is deleted where it stands next to a space or where the text has a comma between two
   digits ("1,000" -> "1000"), else replaced by a space ("light-blue" -> "light blue");
   apostrophes and colons stay; a period is deleted unless a digit follows it ("1.5" stays).
2. words (`process_words`): lower case; number words ``none``/``zero``..``ten`` become digits;
   the articles ``a an the`` are dropped; contractions missing their apostrophe get it
   back ("dont" -> "don't").

Then `vqa_accuracy` averages, over the ten leave-one-annotator-out subsets of the
references, ``min(#annotators in the subset who gave the answer / 3, 1)``: one matching
annotator of ten scores 0.3, two 0.6, three 0.9, four or more 1.0.

By default (``span="whole"``, ``references="official"``) this is the script exactly:
- the prediction is the whole generated answer, newlines and tabs made spaces, then both
  steps;
- the references are compared as given, except that when the annotators disagree (more
  than one distinct answer) each gets step 1 only (so "two" against {2 x "2", 2 x "two",
  6 others} scores 0.6: the prediction becomes "2", the references "two" stay);
- the period rule stops after 32 replacements, as the script's (a ``re.UNICODE`` passed
  where ``re.sub`` takes its count).

fedvlm's friendlier readings, which reports name when used (they are not the official
metric):
- ``span="first_line"``: only the generated text up to the end of its first line (a
  generative model may run on past its answer onto new lines); ``span="first_clause"``: also
  cut at the first ``. , ; : ! ?`` (scores "yes, no" as "yes").
- ``references="processed"``: references get both steps, always, like the prediction.

A single reference, for which the script is undefined (it has no other annotator to
compare with and scores 0), is an exact match of the processed prediction with the
reference (as given, or processed with ``references="processed"``).
"""

import re
from collections.abc import Sequence

ANSWER_SPANS = ("whole", "first_line", "first_clause")
REFERENCES = ("official", "processed")

_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
# The official table of contractions, as "written:restored" pairs. Entries with capitals
# ("Im", "Ive", "Id've") never match lower-cased words, in the script as here.
_CONTRACTIONS = dict(pair.split(":") for pair in """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's
howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd
itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't
mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've
neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at
'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've
shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd
somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's
someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll
someones:someone's somethingd:something'd somethingd've:something'd've something'dve:something'd've
somethingll:something'll thats:that's thered:there'd thered've:there'd've there'dve:there'd've
therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll
theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've
werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd
wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's
whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't
wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll
yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've
you'dve:you'd've youll:you'll youre:you're youve:you've
""".split())
_CLAUSE_END = re.compile(r"[.!?,;:](?!\d)")


def process_punctuation(text: str) -> str:
    """Step 1 of the official processing (see the module docstring)."""
    digits_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        # The test looks at the original text, as the script does.
        joined = p + " " in text or " " + p in text or digits_comma
        out = out.replace(p, "" if joined else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=32)  # the script's count (its re.UNICODE)


def process_words(text: str) -> str:
    """Step 2 of the official processing: lower case, number words, articles, contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def process_answer(text: str) -> str:
    """An answer (a reference, or a prediction's span) in the form the evaluation compares.

    >>> process_answer("The Circle.")
    'circle'
    >>> process_answer("1,000")
    '1000'
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_words(process_punctuation(text))


def answer_span(generated: str, span: str = "whole") -> str:
    """The part of a generated text that is scored: all of it (the official evaluation),
    up to the end of its first line, or (``first_clause``) also cut at the first clause mark."""
    if span not in ANSWER_SPANS:
        raise ValueError(f"answer span {span!r}: expected one of {', '.join(ANSWER_SPANS)}")
    if span == "whole":
        return generated
    lines = generated.strip().splitlines()
    text = lines[0] if lines else ""
    if span == "first_clause":
        text = _CLAUSE_END.split(text, maxsplit=1)[0]
    return text


def vqa_accuracy(prediction: str, references: Sequence[str], span: str = "whole", references_mode: str = "official") -> float:
    """Score one generated answer against its references (the module docstring says how).

    One reference: 1.0 on an exact match, else 0.0. Several (annotators): the mean over
    leaving each annotator out of ``min(#others matching / 3, 1)``.
    """
    if not references:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    if references_mode not in REFERENCES:
        raise ValueError(f"references {references_mode!r}: expected one of {', '.join(REFERENCES)}")
    pred = process_answer(answer_span(prediction, span))
    if references_mode == "processed":
        refs = [process_answer(r) for r in references]
    elif len(set(references)) > 1:
        refs = [process_punctuation(r) for r in references]
    else:
        refs = list(references)
    matches = [r == pred for r in refs]
    if len(matches) == 1:
        return float(matches[0])
    total = sum(matches)
    return sum(min((total - m) / 3.0, 1.0) for m in matches) / len(matches)
