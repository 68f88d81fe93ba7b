"""The prompt blocklist: disguised terms are caught, innocent look-alikes pass."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.moderation.blocklist import blocked_term, compiled
from tests.bot.obfuscation import (
    INNOCENT,
    INVISIBLE,
    LETTER_TECHNIQUES,
    SENTENCES,
    SPACING,
    SPELLINGS,
    TERMS,
    disguised_prompts,
    look_alike_words,
    ordinary_prompts,
)

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
    [
        "g o r e",
        "g.o.r.e",
        "g-o-r-e",
        "g*o*r*e",
        "g_o_r_e",
        "g, o, r, e",
        "g / o / r / e",
        "a g o r e scene",
        "g o r e s",
        "go.re",
        "gor-e",
    ],
)
def test_blocked_term_hidden_with_spacing_is_caught(text: str) -> None:
    assert blocked_term(text, TERMS) == "gore"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("g0re", "gore"),
        ("k1ll", "kill"),
        ("ki11", "kill"),
        ("k111", "kill"),
        ("r4p3", "rape"),
        ("r@pe", "rape"),
        ("nud3", "nude"),
        ("$3x", "sex"),
        ("n4k3d", "naked"),
        ("v10l3n7", "violent"),
        ("455", "ass"),
        ("k!ll", "kill"),
        ("ki||", "kill"),
    ],
)
def test_blocked_term_in_leetspeak_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize("text", ["gorë", "GÖRÉ", "g̃ǒr̈ȩ", "gor\u0308e\u0301"])
def test_blocked_term_with_diacritics_is_caught(text: str) -> None:
    assert blocked_term(text, TERMS) == "gore"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("gоre", "gore"),
        ("rаре", "rape"),
        ("nакеd", "naked"),
        ("νiolent", "violent"),
        ("ΚΙLL", "kill"),
        ("ΝUDΕ", "nude"),
        ("Nμde", "nude"),
        ("вооb", "boob"),
        ("ѕех", "sex"),
        ("соrрѕе", "corpse"),
    ],
)
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
    [
        ("goooore", "gore"),
        ("nuuuuude", "nude"),
        ("kiiilllll", "kill"),
        ("NAAAKED", "naked"),
        ("g o o o r e", "gore"),
        ("asss", "ass"),
    ],
)
def test_blocked_term_with_repeated_letters_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("gores", "gore"),
        ("nudes", "nude"),
        ("kills", "kill"),
        ("asses", "ass"),
        ("sexes", "sex"),
        ("corpses", "corpse"),
        ("blood moons", "blood moon"),
        ("dead bodies", "dead body"),
    ],
)
def test_blocked_term_in_the_plural_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("a bull gored the matador", ["gore"]),
        ("making a killing on the market", ["kill"]),
        ("hanging plants in a sunroom", ["hang"]),
        ("a shooting star over the sea", ["shoot"]),
        ("he was sexing the chicks", ["sex"]),
        ("a bobbed haircut", ["bob"]),
    ],
)
def test_an_ending_other_than_a_plural_makes_another_word(text: str, terms: list[str]) -> None:
    """-ed and -ing change what a word means (the noun gore, a bull gored): only the
    plural of a term is the term."""
    assert blocked_term(text, terms) is None


@pytest.mark.parametrize(
    "text",
    [
        "blood moon",
        "Blood  Moon",
        "bloodmoon",
        "blood-moon",
        "b l o o d m o o n",
        "bl00d m00n",
        "a BLOOD\u200bMOON over the sea",
    ],
)
def test_blocked_phrase_is_caught_however_its_words_are_joined(text: str) -> None:
    assert blocked_term(text, ["blood moon"]) == "blood moon"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("gor e", "gore"),
        ("a g ore scene", "gore"),
        ("nu des", "nude"),
        ("a corp se", "corpse"),
        ("bloo d moon", "blood moon"),
        ("(vio lent:1.2)", "violent"),
        ("go r e", "gore"),
    ],
)
def test_a_term_split_by_a_space_inside_a_word_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize("text", ["go re-enter the room", "a gor e-bike", "blo od mo on"])
def test_a_word_is_split_by_one_space_and_stands_alone(text: str) -> None:
    """One space inside a word, and the pieces not glued to the words around them."""
    assert blocked_term(text, TERMS) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("|)ead body", "dead body"),
        ("c()rpse", "corpse"),
        ("p[]rn", "porn"),
        ("n/\\ked", "naked"),
        ("|<ill", "kill"),
        ("se><", "sex"),
        ("nud€", "nude"),
        ("|\\|ude", "nude"),
        ("\\/iolent", "violent"),
        ("k|ll", "kill"),
        ("k!|l", "kill"),
        ("8oob", "boob"),
        ("6ore", "gore"),
        ("(orpse", "corpse"),
        ("|2ape", "rape"),
        ("|-|entai", "hentai"),
        ("|3oo|3", "boob"),
        ("|>orn", "porn"),
        ("nu|)e", "nude"),
        ("tor+ure", "torture"),
        ("ki|_|_", "kill"),
        ("©orpse", "corpse"),
        ("v|<>lent", "violent"),
    ],
)
def test_a_letter_drawn_with_signs_is_caught(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("(nude:1.2)", "nude"),
        ("((kill))", "kill"),
        ("[gore]", "gore"),
        ("gore!!!", "gore"),
        ("n|u|d|e", "nude"),
        ("{kill|}", "kill"),
        ("<gore>", "gore"),
        ("(masterpiece:1.2)", None),
    ],
)
def test_brackets_and_bars_around_a_word_stay_punctuation(text: str, found: str | None) -> None:
    assert blocked_term(text, TERMS) == found


def test_a_phrase_split_by_punctuation_is_not_the_phrase() -> None:
    assert blocked_term("blood, moon, stars", ["blood moon"]) is None


@pytest.mark.parametrize(
    "text",
    [
        "nudibranch",
        "gorgeous",
        "Gorey",
        "violet",
        "therapist",
        "snakeskin",
        "denuded",
        "Scunthorpe",
        "a gorge at sunset",
        "the drape",
        "grape",
        "skill",
        "kilt",
        "nuance",
        "undead",
        "Essex",
        "class",
        "as",
        "Bob",
    ],
)
def test_innocent_look_alike_words_pass(text: str) -> None:
    assert blocked_term(text, TERMS) is None


@pytest.mark.parametrize("text", ["a rapper", "assess the damage"])
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
    # Refused under another term counts: g|o|r|£|s may be gories as well as gores.
    missed = [(how, prompt) for _, how, prompt in cases if blocked_term(prompt, TERMS) is None]
    caught = 1 - len(missed) / len(cases)
    assert len(cases) > 2000
    assert caught >= LEAST_CAUGHT, f"caught {caught:.2%} of {len(cases)}; missed {missed}"


def test_innocent_look_alikes_are_rarely_refused() -> None:
    refused = [(text, blocked_term(text, TERMS)) for text in INNOCENT]
    refused = [(text, term) for text, term in refused if term is not None]
    assert len(INNOCENT) > 100
    assert len(refused) / len(INNOCENT) <= MOST_REFUSED, f"refused {refused}"


def test_words_of_the_dictionary_that_merely_contain_a_term_pass() -> None:
    """Every word of a shipped English dictionary that holds a term, whole or in part,
    and is none of its forms (gorgeous, therapist, killing, sexed)."""
    words = look_alike_words()
    assert len(words) > 500
    assert [(word, blocked_term(word, TERMS)) for word in words if blocked_term(word, TERMS)] == []


def test_ordinary_english_prompts_are_rarely_refused() -> None:
    prompts = ordinary_prompts()
    refused = [(prompt, blocked_term(prompt, TERMS)) for prompt in prompts]
    refused = [(prompt, term) for prompt, term in refused if term is not None]
    assert len(prompts) >= 3000
    assert len(refused) / len(prompts) <= MOST_REFUSED, f"refused {refused}"


DISGUISES = LETTER_TECHNIQUES | SPACING


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
@settings(max_examples=8, derandomize=True, deadline=None, database=None)
@given(rng=st.randoms(use_true_random=False), sentence=st.sampled_from(SENTENCES))
def test_every_disguise_of_every_term_is_caught(
    disguise: str, rng: random.Random, sentence: str
) -> None:
    """Each disguise the matcher sees through, alone, on each spelling of each term."""
    missed = []
    for term in TERMS:
        for spelling in SPELLINGS[term]:
            text = sentence.format("".join(DISGUISES[disguise](list(spelling), rng)))
            if blocked_term(text, TERMS) != term:
                missed.append(text)
    assert missed == []


JOINERS = [".", "-", "*", "_", "~", "'"]


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
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
    [
        "a " * 50_000,
        "1" * 100_000,
        "1 " * 50_000,
        "k1" * 50_000,
        "!1|" * 33_334,
        "ab-" * 33_334,
        "р" * 100_000,
        "ρ1 " * 33_334,
        "\u200b" * 100_000,
        "ass-" * 25_000,
    ],
)
def test_a_huge_adversarial_prompt_is_answered_promptly(text: str) -> None:
    assert blocked_term(text, TERMS) in (None, "ass")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("a " * 50_000 + "n u d e", "nude"),
        ("g" + "o" * 99_998 + "re", "gore"),
        ("x" * 99_990 + " k1ll", "kill"),
    ],
)
def test_a_term_at_the_end_of_a_huge_prompt_is_found(text: str, found: str) -> None:
    assert blocked_term(text, TERMS) == found
