"""Disguised prompts for the blocklist tests, made the ways members disguise words.

Every technique is applied alone to every spelling of every term, then mixed
at random (fixed seed), and the result is set in a sentence. The look-alike
tables here are the test's own, written by hand, so they check the module's
library-built ones rather than repeat them.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import cache

TERMS = [
    "nude",
    "naked",
    "gore",
    "gory",
    "rape",
    "kill",
    "violent",
    "porn",
    "sex",
    "corpse",
    "behead",
    "torture",
    "hentai",
    "nsfw",
    "boob",
    "ass",
    "blood moon",
    "dead body",
]

# The term and its plurals, spelled the way English spells them.
SPELLINGS = {
    "nude": ["nude", "nudes"],
    "naked": ["naked"],
    "gore": ["gore", "gores"],
    "gory": ["gory"],
    "rape": ["rape", "rapes"],
    "kill": ["kill", "kills"],
    "violent": ["violent"],
    "porn": ["porn"],
    "sex": ["sex", "sexes"],
    "corpse": ["corpse", "corpses"],
    "behead": ["behead", "beheads"],
    "torture": ["torture", "tortures"],
    "hentai": ["hentai"],
    "nsfw": ["nsfw"],
    "boob": ["boob", "boobs"],
    "ass": ["ass", "asses"],
    "blood moon": ["blood moon", "blood moons"],
    "dead body": ["dead body", "dead bodies"],
}

LEET = {"a": "4@", "e": "3", "i": "1", "l": "1", "o": "0", "s": "5$", "t": "7"}
CYRILLIC = {
    "a": "а",
    "c": "с",
    "e": "е",
    "o": "о",
    "p": "р",
    "x": "х",
    "y": "у",
    "i": "і",
    "j": "ј",
    "s": "ѕ",
    "h": "һ",
    "d": "ԁ",
    "k": "к",
    "m": "м",
    "t": "т",
    "b": "в",
    "A": "А",
    "B": "В",
    "E": "Е",
    "H": "Н",
    "K": "К",
    "M": "М",
    "O": "О",
    "P": "Р",
    "T": "Т",
    "X": "Х",
    "C": "С",
}
GREEK = {
    "a": "α",
    "o": "ο",
    "i": "ι",
    "k": "κ",
    "v": "ν",
    "u": "υ",
    "p": "ρ",
    "t": "τ",
    "n": "η",
    "e": "ε",
    "b": "β",
    "A": "Α",
    "B": "Β",
    "E": "Ε",
    "H": "Η",
    "I": "Ι",
    "K": "Κ",
    "M": "Μ",
    "N": "Ν",
    "O": "Ο",
    "P": "Ρ",
    "T": "Τ",
    "X": "Χ",
    "Z": "Ζ",
}
# Letters drawn with signs, as leetspeak writes them.
SYMBOLS = {
    "a": ["/\\", "/-\\", "@", "∆"],
    "b": ["|3", "8"],
    "c": ["(", "<", "[", "©", "¢"],
    "d": ["|)", "[)", "|]", "|>"],
    "e": ["€", "£", "3"],
    "g": ["6", "9"],
    "h": ["|-|", "]-[", "}{"],
    "i": ["!", "|", "¡"],
    "k": ["|<", "|{"],
    "l": ["|", "!", "£", "|_"],
    "m": ["|\\/|", "/\\/\\"],
    "n": ["|\\|", "/\\/"],
    "o": ["()", "[]", "<>", "{}"],
    "p": ["|*", "|>"],
    "r": ["|2", "®"],
    "s": ["$", "§"],
    "t": ["+", "†"],
    "u": ["|_|", "(_)"],
    "v": ["\\/"],
    "w": ["\\/\\/"],
    "x": ["><", "×"],
    "y": ["`/", "¥"],
}
MARKS = ["\u0301", "\u0300", "\u0308", "\u0302", "\u0303", "\u0327", "\u030a", "\u0304"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
SEPARATORS = [" ", ".", "-", "*", "_", "~", "/", "|", " . ", ", ", "  "]
SENTENCES = [
    "{}",
    "a photo of {}, highly detailed",
    "{}!!!",
    "(({})), masterpiece, 8k",
    '"{}" in the style of a renaissance painting',
    "portrait, {}: cinematic lighting.",
    "best quality, ({}:1.3), 1girl",
    "A scene that is very {}?",
    "{}... at dawn",
]

Glyphs = list[str]  # one entry per letter of the spelling; a phrase's spaces stay as they are
Technique = Callable[[Glyphs, random.Random], Glyphs]


def _swap(table: Mapping[str, Sequence[str]], glyphs: Glyphs, rng: random.Random) -> Glyphs:
    """About two letters in three swapped for a look-alike, and at least one."""
    swappable = [i for i, glyph in enumerate(glyphs) if glyph[:1] in table]
    chosen = {i for i in swappable if rng.random() < 0.7} or set(swappable[:1])
    return [
        "".join(rng.choice(table.get(c, c)) for c in g) if i in chosen else g
        for i, g in enumerate(glyphs)
    ]


def leet(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return _swap(LEET, glyphs, rng)


def symbols(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return _swap(SYMBOLS, glyphs, rng)


def cyrillic(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return _swap(CYRILLIC, glyphs, rng)


def greek(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return _swap(GREEK, glyphs, rng)


def diacritics(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    marked = [
        unicodedata.normalize("NFC", g + rng.choice(MARKS))
        if g[:1].isalpha() and rng.random() < 0.6
        else g
        for g in glyphs
    ]
    return marked if marked != glyphs else [glyphs[0] + MARKS[2], *glyphs[1:]]


def fullwidth(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return ["".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in g) for g in glyphs]


def mixed_case(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return [g.upper() if rng.random() < 0.5 else g for g in glyphs]


def shouted(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    return [g.upper() for g in glyphs]


def repeated(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    """A letter or two written three to six times: written twice, a letter may spell
    another word (asses, assess; the matcher lets that one pass)."""
    letters = [i for i, g in enumerate(glyphs) if g != " "]
    chosen = set(rng.sample(letters, k=min(len(letters), rng.choice([1, 1, 2]))))
    return [g * rng.randint(3, 6) if i in chosen else g for i, g in enumerate(glyphs)]


def invisible(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    hidden = [g + rng.choice(INVISIBLE) if rng.random() < 0.6 else g for g in glyphs[:-1]]
    return [hidden[0] + INVISIBLE[0], *hidden[1:], glyphs[-1]]


def spaced_out(separator: str) -> Technique:
    """Every letter apart (n u d e); a phrase's words apart by a wider gap."""

    def apart(glyphs: Glyphs, rng: random.Random) -> Glyphs:
        out = []
        for i, g in enumerate(glyphs):
            out.append(g)
            if i < len(glyphs) - 1 and g != " " and glyphs[i + 1] != " ":
                out.append(separator)
        return out

    return apart


def split(glyphs: Glyphs, rng: random.Random) -> Glyphs:
    """One space inside one word (gor e, nu de): after a letter that another follows."""
    inside = [i for i in range(len(glyphs) - 1) if " " not in (glyphs[i], glyphs[i + 1])]
    at = rng.choice(inside)
    return [g + " " if i == at else g for i, g in enumerate(glyphs)]


LETTER_TECHNIQUES: dict[str, Technique] = {
    "mixed case": mixed_case,
    "capitals": shouted,
    "leetspeak": leet,
    "symbols": symbols,
    "cyrillic": cyrillic,
    "greek": greek,
    "diacritics": diacritics,
    "fullwidth": fullwidth,
    "repeated letters": repeated,
    "zero-width": invisible,
}
SPACING = {f"separated by {sep!r}": spaced_out(sep) for sep in SEPARATORS} | {
    "split by a space": split
}


def disguised_prompts(seed: int = 7, mixes_per_spelling: int = 50) -> list[tuple[str, str, str]]:
    """(term, how it was disguised, prompt) for every term in TERMS."""
    rng = random.Random(seed)
    singles = LETTER_TECHNIQUES | SPACING
    cases = []
    for term in TERMS:
        for spelling in SPELLINGS[term]:
            for name, technique in singles.items():
                text = "".join(technique(list(spelling), rng))
                cases.append((term, name, rng.choice(SENTENCES).format(text)))
            for _ in range(mixes_per_spelling):
                # In the order a person would: case first, so look-alikes keep their look.
                chosen = set(rng.sample(sorted(LETTER_TECHNIQUES), k=rng.randint(2, 3)))
                names = [name for name in LETTER_TECHNIQUES if name in chosen]
                if rng.random() < 0.5:
                    names.append(rng.choice(sorted(SPACING)))  # spacing goes last
                glyphs = list(spelling)
                for name in names:
                    glyphs = singles[name](glyphs, rng)
                text = "".join(glyphs)
                cases.append((term, " + ".join(names), rng.choice(SENTENCES).format(text)))
    return cases


# Words and prompts that look like blocked terms and are not: refusing them is a mistake.
INNOCENT = [
    "nudibranch",
    "gorgeous",
    "Gorey",
    "violet",
    "therapist",
    "snakeskin",
    "denuded",
    "Scunthorpe",
    "grape",
    "drape",
    "skill",
    "kilt",
    "nuance",
    "undead",
    "gorge",
    "gorilla",
    "allegory",
    "category",
    "Gordon",
    "rapeseed",
    "trapeze",
    "scrape",
    "scraped",
    "grapes",
    "draped",
    "rapper",
    "rapping",
    "rapped",
    "rapids",
    "rapier",
    "rapture",
    "kiln",
    "skilled",
    "kilogram",
    "Kilimanjaro",
    "killdeer",
    "violin",
    "violence",
    "Essex",
    "Sussex",
    "sextant",
    "sextet",
    "porridge",
    "popcorn",
    "acorn",
    "corpus",
    "corps",
    "corporal",
    "ahead",
    "beheld",
    "tortoise",
    "torte",
    "class",
    "bass",
    "assassin",
    "assist",
    "passage",
    "assess",
    "glass",
    "brass",
    "as",
    "has",
    "Bob",
    "bobcat",
    "booby",
    "nakedness",
    "nudge",
    "nudging",
    "nuke",
    "bloodhound",
    "blood orange",
    "harvest moon",
    "moon",
    "body",
    "deadline",
    "nsf",
    "hen",
    "henta",
    "snaked",
    "knaked",
    "a gorge at sunset",
    "the drape on the window",
    "a bowl of grapes",
    "a nudibranch on coral, macro photo",
    "Edward Gorey style illustration",
    "gorgeous violet flowers in a vase",
    "a therapist's office, soft light",
    "snakeskin boots on a wooden floor",
    "a denuded hillside after a wildfire",
    "Scunthorpe town centre at night",
    "skill tree diagram, game UI",
    "a man in a kilt playing bagpipes",
    "the subtle nuance of morning light",
    "undead knight in rusty armour",
    "kiln-fired pottery on a shelf",
    "a rapeseed field in bloom",
    "a rapper rapping on stage",
    "a scraped knee, first aid poster",
    "a bloodhound under the full moon",
    "blood orange sorbet",
    "the moon over a bloody mary",
    "a marine corps parade",
    "porridge with acorns",
    "the Essex countryside",
    "a sextant on a ship's deck",
    "class photo, 1985",
    "assassin in the shadows",
    "bass guitar on a stage",
    "a brass band marching",
    "as the sun sets over the sea",
    "a glass of water",
    "Bob Ross style landscape",
    "a bobcat in the snow",
    "a tortoise eating lettuce",
    "a slice of chocolate torte",
    "vitamin C tablets",
    "1girl, solo, smiling, (masterpiece:1.2), best quality",
    "4 cats on a sofa, 8k uhd",
    "3d render of a gorilla",
    "r2d2 robot in a desert",
    "a b c wooden blocks",
    "Plan B, a movie poster",
    "naïve art of a café",
    "résumé template",
    "the killer whale jumps",
    "skillful painter at work",
    "a sandy beach",
    "an allegory of spring",
    "a dead tree in a body of water",
    "her body, dead tired, sleeping",
    "e.g. a kettle",
    "U.S.S. Enterprise",
    "x-ray of a hand",
    "a k-pop idol on stage",
    "a well-known T-shirt",
    "an s.o.s. sign on the beach",
    "nu-disco album cover",
    "go-kart race",
    "Dr. Who's blue box",
    "wow!amazing view",
    "a|b testing chart",
    "a fox --seed 1234567",
    "(sunset:1.4), (sea:1.55), 4k",
    "the year 1455, a castle",
    # Refused, knowingly: letters may repeat at will (goooore), so goree is gore.
    "Gorée island, Senegal",
]


@cache
def english_words() -> list[str]:
    """The words of GCIDE, the dictionary the english-words package ships, in order."""
    from english_words import get_english_words_set

    return sorted(w for w in get_english_words_set(["gcide"], lower=True) if w.isalpha())


def _contains_a_term(text: str) -> bool:
    words = f" {' '.join(re.findall('[a-z]+', text.lower()))} "
    return any(f" {form} " in words for forms in SPELLINGS.values() for form in forms)


def look_alike_words() -> list[str]:
    """Dictionary words in which a blocked term is written, whole or as part (gorgeous,
    therapist, sextant), and none of its forms."""
    terms = [term.replace(" ", "") for term in TERMS]
    return [w for w in english_words() if any(t in w for t in terms) and not _contains_a_term(w)]


PROMPT_SHAPES = [
    "{} {} {}",
    "a {} {} of {}, {}, highly detailed",
    "({}:1.2), {} {}, [{}], 8k uhd",
    "{} and {} in the {}, by {} --ar 16:9 --seed 48213",
    "portrait of a {} {}, {} lighting, <lora:{}:0.7>",
    "{}, {}, {}, {}, masterpiece, best quality",
    "the {} {}'s {} at {}",
    "{} {}-{} {}",
]


def ordinary_prompts(count: int = 3000, seed: int = 18) -> list[str]:
    """Prompts of dictionary words set in the shapes prompts take; none holds a blocked
    term or its plural, as words."""
    rng = random.Random(seed)
    words = english_words()
    prompts: list[str] = []
    while len(prompts) < count:
        shape = rng.choice(PROMPT_SHAPES)
        prompt = shape.format(*rng.choices(words, k=shape.count("{}")))
        if not _contains_a_term(prompt):
            prompts.append(prompt)
    return prompts
