"""Inputs for the property tests: valid documents cut short or with a span replaced, and random text."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

# Modest: every parser gets a few hundred inputs in the whole run, and the suite stays fast.
FAST = settings(max_examples=60, deadline=None, database=None)

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@st.composite
def damaged(draw: st.DrawFn, valid: str) -> str:
    """``valid`` truncated at a random point, a random span replaced by random text, or random text."""
    how = draw(st.sampled_from(("truncate", "splice", "random")))
    if how == "random":
        return draw(TEXT)
    cut = draw(st.integers(0, len(valid)))
    if how == "truncate":
        return valid[:cut]
    end = draw(st.integers(cut, min(len(valid), cut + 40)))
    filler = draw(st.sampled_from(("", ":", "- ", "{", "[", "'", '"', "\t", "\n", "&a", "*a", "!!python/object", "0",
                                   "-1", "1e309", "~", "null", "true"))) + draw(st.text(max_size=8))
    return valid[:cut] + filler + valid[end:]
