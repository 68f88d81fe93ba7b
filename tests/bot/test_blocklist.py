"""The prompt blocklist: disguised terms are caught, innocent look-alikes pass."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.moderation.blocklist import blocked_term, compiled
from tests.bot.obfuscation import INNOCENT, INVISIBLE, SENTENCES, TERMS, disguised_prompts

# The bar an independent set of disguised and innocent prompts is held to.
LEAST_CAUGHT = 0.993
MOST_REFUSED = 0.007


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("a Gory scene", "gory"),
        ("an allegory of spring", None),
        ("red\u200bsplatter and gore", "gore"),
        ("Blood  Moon rising", "blood moon"),
    ],
)
def test_blocked_terms_match_whole_words_ignoring_case(text: str, found: str | None) -> None:
    assert blocked_term(text, ["blood moon", "gore", "gory"]) == found


@pytest.mark.parametrize(
    "text",
    ["g o r e", "g.o.r.e", "g-o-r-e", "g*o*r*e", "g_o_r_e", "g, o, r, e", "g / o / r / e",
     "a g o r e scene", "g o r e s", "go.re", "gor-e"],
)  # fmt: skip
def test_blocked_term_hidden_with_spacing_is_caught(text: str) -> None:
    assert blocked_term(text, TERMS) == "gore"


@pytest.mark.parametrize(
    ("text", "found"),
    [("g0re", "gore"), ("k1ll", "kill"), ("ki11", "kill"), ("k111", "kill"), ("r4p3", "rape"),
     ("r@pe", "rape"), ("nud3", "nude"), ("$3x", "sex"), ("n4k3d", "naked"),
     ("v10l3n7", "violent"), ("455", "ass"), ("k!ll", "kill"), ("ki||", "kill")],
)  # fmt: skip
def test_blocked_term_in_leetspeak_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize("text", ["gorë", "GÖRÉ", "g̃ǒr̈ȩ", "gor\u0308e\u0301"])
def test_blocked_term_with_diacritics_is_caught(text: str) -> None:
    assert blocked_term(text, TERMS) == "gore"


@pytest.mark.parametrize(
    ("text", "found"),
    [("gоre", "gore"), ("rаре", "rape"), ("nакеd", "naked"), ("νiolent", "violent"),
     ("ΚΙLL", "kill"), ("ΝUDΕ", "nude"), ("Nμde", "nude"), ("вооb", "boob"),
     ("ѕех", "sex"), ("соrрѕе", "corpse")],
)  # fmt: skip
def test_blocked_term_in_cyrillic_or_greek_look_alikes_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize("hidden", INVISIBLE)
def test_blocked_term_with_invisible_characters_is_caught(hidden: str) -> None:
    assert blocked_term(f"a n{hidden}u{hidden}d{hidden}e woman", TERMS) == "nude"


@pytest.mark.parametrize("text", ["ＮＵＤＥ", "𝐧𝐮𝐝𝐞", "𝓷𝓾𝓭𝓮", "ⓝⓤⓓⓔ", "ɴᴜᴅᴇ", "🇳🇺🇩🇪"])
def test_blocked_term_in_fullwidth_or_styled_letters_is_caught(text: str) -> None:
    assert blocked_term(text, TERMS) == "nude"


@pytest.mark.parametrize(
    ("text", "found"),
    [("goooore", "gore"), ("nuuuuude", "nude"), ("kiiilllll", "kill"), ("NAAAKED", "naked"),
     ("g o o o r e", "gore"), ("asss", "ass")],
)  # fmt: skip
def test_blocked_term_with_repeated_letters_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize(
    ("text", "found"),
    [("gores", "gore"), ("gored", "gore"), ("goring", "gore"), ("nudes", "nude"),
     ("nuded", "nude"), ("kills", "kill"), ("killed", "kill"), ("killing", "kill"),
     ("raped", "rape"), ("raping", "rape"), ("asses", "ass"), ("sexes", "sex"),
     ("beheading", "behead"), ("blood moons", "blood moon"), ("dead bodies", "dead body")],
)  # fmt: skip
def test_blocked_term_with_a_plural_ed_or_ing_ending_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize(
    "text", ["blood moon", "Blood  Moon", "bloodmoon", "blood-moon", "b l o o d m o o n",
             "bl00d m00n", "a BLOOD\u200bMOON over the sea"],
)  # fmt: skip
def test_blocked_phrase_is_caught_however_its_words_are_joined(text: str) -> None:
    assert blocked_term(text, ["blood moon"]) == "blood moon"


def test_a_phrase_split_by_punctuation_is_not_the_phrase() -> None:
    assert blocked_term("blood, moon, stars", ["blood moon"]) is None


@pytest.mark.parametrize(
    "text",
    ["nudibranch", "gorgeous", "Gorey", "violet", "therapist", "snakeskin", "denuded",
     "Scunthorpe", "a gorge at sunset", "the drape", "grape", "skill", "kilt", "nuance",
     "undead", "Essex", "class", "as", "Bob"],
)  # fmt: skip
def test_innocent_look_alike_words_pass(text: str) -> None:
    assert blocked_term(text, TERMS) is None


@pytest.mark.parametrize("text", ["a rapper rapping", "he rapped", "assess the damage"])
def test_a_letter_doubled_into_another_word_passes(text: str) -> None:
    assert blocked_term(text, TERMS) is None


def test_a_long_number_is_not_leetspeak() -> None:
    assert blocked_term("a cat --seed 7104553", ["ass"]) is None
    assert blocked_term("a cat, 455", ["ass"]) == "ass"


def test_the_term_is_reported_as_configured() -> None:
    assert blocked_term("a g.o.r.e scene", ["Blood Moon", "GORE"]) == "GORE"


@pytest.mark.parametrize("term", ["Gorë", "ＧＯＲＥ", "g0re", "gоre"])
def test_terms_are_folded_like_prompts(term: str) -> None:
    assert blocked_term("plain gore", [term]) == term


def test_no_terms_block_nothing() -> None:
    assert blocked_term("gore", []) is None


def test_a_term_list_is_compiled_once() -> None:
    assert compiled(("gore", "nude")) is compiled(("gore", "nude"))


def test_disguised_blocked_prompts_are_caught() -> None:
    cases = disguised_prompts()
    missed = [(how, prompt) for term, how, prompt in cases if blocked_term(prompt, TERMS) != term]
    caught = 1 - len(missed) / len(cases)
    assert len(cases) > 2000
    assert caught >= LEAST_CAUGHT, f"caught {caught:.2%} of {len(cases)}; missed {missed}"


def test_innocent_look_alikes_are_rarely_refused() -> None:
    refused = [(text, blocked_term(text, TERMS)) for text in INNOCENT]
    refused = [(text, term) for text, term in refused if term is not None]
    assert len(INNOCENT) > 100
    assert len(refused) / len(INNOCENT) <= MOST_REFUSED, f"refused {refused}"


JOINERS = [".", "-", "*", "_", "~", "'"]


@settings(max_examples=300, deadline=None, database=None)
@given(
    term=st.sampled_from(TERMS),
    spacer=st.sampled_from(["", " ", "  ", ".", "-", "*", "_", "/", " . ", ", "]),
    sentence=st.sampled_from(SENTENCES),
    data=st.data(),
)
def test_separators_or_invisible_characters_between_letters_are_still_caught(
    term: str, spacer: str, sentence: str, data: st.DataObject
) -> None:
    """Any joiners and invisible characters between letters; a spacer between all of them."""
    inserts = st.text(alphabet=st.sampled_from(INVISIBLE + JOINERS), max_size=3)
    words = []
    for word in term.split():
        gaps = [spacer + data.draw(inserts) for _ in word[1:]]
        words.append(word[0] + "".join(g + c for g, c in zip(gaps, word[1:], strict=True)))
    disguised = sentence.format(" ".join(words))
    assert blocked_term(disguised, TERMS) == term


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "text",
    ["a " * 50_000, "1" * 100_000, "1 " * 50_000, "k1" * 50_000, "!1|" * 33_334,
     "ab-" * 33_334, "р" * 100_000, "ρ1 " * 33_334, "\u200b" * 100_000, "ass-" * 25_000],
)  # fmt: skip
def test_a_huge_adversarial_prompt_is_answered_promptly(text: str) -> None:
    assert blocked_term(text, TERMS) in (None, "ass")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "found"),
    [("a " * 50_000 + "n u d e", "nude"), ("g" + "o" * 99_998 + "re", "gore"),
     ("x" * 99_990 + " k1ll", "kill")],
)  # fmt: skip
def test_a_term_at_the_end_of_a_huge_prompt_is_found(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found
