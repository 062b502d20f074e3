import numpy as np

from moe_emergence.analysis.perturb import tokenize_with_offsets
from moe_emergence.analysis.token_types import (
    TOKEN_TYPES,
    bpe_token_types,
    char_types,
    token_type_routing,
)

SOURCE = '''import os  # the os module

def area(r):
    """Circle area."""
    if r > 0:
        return 3.14 * r ** 2
    return None
'''


def _types_of(source, tokenizer):
    ids, offs = tokenize_with_offsets(tokenizer, source)
    ct = char_types(source)
    types = bpe_token_types(ct.labels, offs)
    return ct, [
        (source[a:b], TOKEN_TYPES[t])
        for (a, b), t in zip(offs.tolist(), types.tolist(), strict=True)
    ]


def test_characters_get_their_python_token_type():
    ct = char_types(SOURCE)
    assert ct.complete
    label = {i: TOKEN_TYPES[t] for i, t in enumerate(ct.labels)}
    at = SOURCE.index
    assert label[at("import")] == "keyword" and label[at("os")] == "name"
    assert label[at("# the")] == "comment" and label[at("3.14")] == "number"
    assert label[at('"""Circle')] == "string" and label[at("**")] == "operator"
    assert label[at("    if")] == "other"  # indentation
    assert label[at("None")] == "keyword"


def test_bpe_tokens_take_the_majority_type(gpt2_tokenizer):
    _, typed = _types_of(SOURCE, gpt2_tokenizer)
    d = {}
    for text, t in typed:
        d.setdefault(text, t)  # first occurrence (" os" also appears in the comment)
    assert d["import"] == "keyword"
    assert d[" os"] == "name"  # the leading space loses the tie to the name
    assert d[" area"] == "name" and d[" return"] == "keyword" and d[" None"] == "keyword"
    assert d[" 3"] == "number" and d[" **"] == "operator" and d[" >"] == "operator"
    assert d[" module"] == "comment"
    assert d["\n"] == "other"


def test_majority_and_ties_on_hand_made_offsets():
    labels = np.array(
        [TOKEN_TYPES.index(t) for t in ["other", "name", "name", "operator", "other", "other"]]
    )
    offsets = np.array([[0, 2], [1, 4], [3, 6], [2, 2]])
    assert [TOKEN_TYPES[t] if t >= 0 else None for t in bpe_token_types(labels, offsets)] == [
        "name",
        "name",
        "other",
        None,
    ]


def test_code_that_fails_to_tokenize_keeps_what_came_before():
    bad = 'x = 1\ny = """never closed\nz = 2\n'
    ct = char_types(bad)
    assert not ct.complete and "TokenError" in ct.error
    assert TOKEN_TYPES[ct.labels[0]] == "name" and TOKEN_TYPES[ct.labels[4]] == "number"
    assert TOKEN_TYPES[ct.labels[bad.index("z")]] == "other"
    dedent = "if x:\n        a = 1\n    b = 2\n"
    ct = char_types(dedent)
    assert not ct.complete and "IndentationError" in ct.error
    assert TOKEN_TYPES[ct.labels[0]] == "keyword"


def test_type_routing_table():
    types = np.array([0, 0, 1, -1, 1])
    expert = np.array([2, 2, 0, 1, 2])
    out = token_type_routing(types, expert, 3)
    assert out["fractions"][0] == [0.0, 0.0, 1.0] and out["fractions"][1] == [0.5, 0.0, 0.5]
    assert out["n_tokens"]["keyword"] == 2 and out["n_tokens"]["other"] == 0
    assert out["load"] == [0.25, 0.0, 0.75]
