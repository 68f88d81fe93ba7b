"""The prompt blocklist: finds a blocked term however a prompt disguises it.

Prompt and terms are folded alike to lowercase Latin letters before they are
compared: compatibility forms undone (NFKD, NFKC's mapping with diacritics
split off to be dropped: fullwidth, circled, math letters), zero-width and
format characters dropped, Cyrillic and Greek look-alikes read as the Latin
letter they imitate, leetspeak read as letters. A term then matches a run of
the prompt's words, whole words only, with letters repeated at will and a
plural, -ed or -ing ending: `g o r e`, `g0re`, `g.o.r.e`, `gorë`, `gоre`
(Cyrillic о), `goooore` and `goring` are all `gore`, while gorgeous, Gorey
and a gorge are not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import product

from anyascii import anyascii
from confusable_homoglyphs import confusables

# A word whose letters may each stand for several (1 is i or l, Cyrillic р looks
# like p but is spelled r) is tried in at most this many spellings.
_MAX_SPELLINGS = 32
_LEET = str.maketrans(
    {"0": "o", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s", "7": "t"}
    | dict.fromkeys("2689", " ")
)
_ONE = ("i", "l")
# Five digits or more (repeats aside: g000re) are a number, such as a seed, not leetspeak.
_DIGITS = re.compile(r"[0-9]{5,}")
_BANG_IN_WORD = re.compile(r"(?<=[a-z0-9@$])!+(?=[a-z0-9@$])")  # k!ll
_PIPE_BY_WORD = re.compile(r"(?<=[a-z0-9@$])\|+|\|+(?=[a-z0-9@$])")  # ki||
# After folding, the only characters left outside ASCII are letters of several readings.
_LETTERS = r"a-z1\x80-\U0010ffff"
_WORD = re.compile(rf"([{_LETTERS}]+)")
_NOT_LETTERS = re.compile(rf"[^{_LETTERS}]+")
# Words of one and the same letter in a row (o o o, or a a a a... at length) are one word.
_SAME_LETTER_WORDS = re.compile(
    rf"(?<![{_LETTERS}])([{_LETTERS}])\1*(?:[^{_LETTERS}]+\1+)+(?![{_LETTERS}])"
)
_REPEATS = re.compile(r"(.)\1+")
_RUNS = re.compile(r"(.)\1*")
# Signs that join the letters of one disguised word (n.u.d.e, nu-de); white
# space and other punctuation part words, except between single letters.
_JOINERS = ".-_*~+/\\|'`^=#%&"
_VOWELS = frozenset("aeiouy")


class _Latin(dict[int, str]):
    """A str.translate table from any character to lowercase Latin, filled on first sight.

    A letter that may stand for several Latin ones is left as it is, and its
    readings are kept in `choices`, most likely first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.choices: dict[str, tuple[str, ...]] = {"1": _ONE}

    def __missing__(self, code: int) -> str:
        char = chr(code)
        latin = _to_latin(char)
        if isinstance(latin, tuple):
            self.choices[char] = latin
            latin = char
        self[code] = latin
        return latin


def _to_latin(char: str) -> str | tuple[str, ...]:
    if char.isascii():
        if char.isspace():
            return " "
        return char.lower() if char.isprintable() else ""
    category = unicodedata.category(char)
    if category[0] == "M" or category == "Cf":
        return ""  # diacritics (already split off by NFKD), zero-width and format characters
    if category[0] == "Z" or char.isspace():
        return " "
    if category[0] == "C":
        return "" if category == "Cc" else "."
    if category[0] == "L":
        letters = _latin_letters(char)
        return letters[0] if len(letters) == 1 else letters
    spelled = anyascii(char)
    if category[0] == "N":
        return spelled.lower() if spelled.isascii() and spelled.isalnum() else "."
    # Symbols and punctuation join letters, save the few that stand for one (🇳).
    return spelled.lower() if len(spelled) == 1 and spelled.isalpha() else "."


def _latin_letters(char: str) -> tuple[str, ...]:
    """What a letter may stand for, most likely first: the Latin letters it looks like
    (a small Cyrillic letter looks like a small capital: в is B), then its spelling,
    then its look-alikes' spelling (Greek μ looks like µ, micro: u)."""
    upper = char.upper()
    homoglyphs = _homoglyphs(char)
    if len(upper) == 1 and upper != char:
        homoglyphs += [upper] if upper.isascii() else _homoglyphs(upper)
    looks = [_bare(homoglyph) for homoglyph in homoglyphs]
    spelled = "".join(filter(str.isalpha, anyascii(char))).lower()
    looks_spelled = [anyascii(homoglyph).lower() for homoglyph in homoglyphs]
    found = [
        *filter(_is_letter, looks),
        spelled,
        *filter(_is_letter, looks_spelled),
    ]
    return tuple(dict.fromkeys(letters for letters in found if letters))[:4] or ("",)


def _homoglyphs(char: str) -> list[str]:
    listed = confusables.is_confusable(char, greedy=True, preferred_aliases=[])
    return [homoglyph["c"] for homoglyph in listed[0]["homoglyphs"]] if listed else []


def _bare(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _is_letter(text: str) -> bool:
    return len(text) == 1 and text.isascii() and text.isalpha()


_LATIN = _Latin()


def _readings(text: str) -> list[str]:
    """`text` folded to lowercase Latin words and separators, leetspeak read as letters.

    Two readings when `!` or `|` stand by letters: as letters (k!ll, ki||)
    and as separators (n|u|d|e).
    """
    latin = unicodedata.normalize("NFKD", text).translate(_LATIN)
    latin = _DIGITS.sub(lambda digits: " " if len(_squeezed(digits[0])) >= 5 else digits[0], latin)
    found = [latin]
    if "!" in latin or "|" in latin:
        as_i = _BANG_IN_WORD.sub(lambda bangs: "i" * len(bangs[0]), latin)
        as_l = _PIPE_BY_WORD.sub(lambda pipes: "l" * len(pipes[0]), latin)
        found = [as_i, as_l]
    return list(dict.fromkeys(reading.translate(_LEET) for reading in found))


def _is_plain(word: str) -> bool:
    """Read one way only: no 1 and no letter of several readings."""
    return word.isascii() and "1" not in word


def _spellings(word: str) -> list[str]:
    """The ways to read a folded word; one for most."""
    if _is_plain(word):
        return [word]
    options = [_LATIN.choices.get(char, (char,)) for char in word]
    count = 1
    for option in options:
        count *= len(option)
        if count > _MAX_SPELLINGS:
            break
    else:
        return ["".join(letters) for letters in product(*options)]
    # Too many to try: each such letter read the same way (all 1s as i, then as l).
    tries = max(len(option) for option in options)
    return list(
        dict.fromkeys("".join(o[min(n, len(o) - 1)] for o in options) for n in range(tries))
    )


def _squeezed(word: str) -> str:
    return _REPEATS.sub(r"\1", word)


def _runs(word: str) -> list[int]:
    return [len(run[0]) for run in _RUNS.finditer(word)]


@dataclass(frozen=True)
class _Form:
    """One spelling of a blocked term, squeezed: its key has no letter twice in a row."""

    term: str  # as configured, to tell the member
    least: tuple[int, ...]  # how often each letter of the key must repeat (ass is not as)
    words: int  # the term's words may be split by up to words - 1 spaces in the prompt
    # A letter of the key that, written exactly twice, spells another word:
    # the p of raping (rapping), the last s of asses (assess).
    not_twice: int | None

    def fits(self, runs: list[int]) -> bool:
        if any(have < need for have, need in zip(runs, self.least, strict=True)):
            return False
        twice = self.not_twice
        return twice is None or not (runs[twice] == 2 and self.least[twice] == 1)


def _endings(word: str) -> Iterator[tuple[str, int | None]]:
    """`word` with its plural, -ed and -ing endings; each with its letter that may not
    be written twice, as an index in the spelling."""
    yield word, None
    yield word + "s", None
    if word.endswith(("s", "x", "z", "ch", "sh")):
        yield word + "es", len(word) + 1
    if word.endswith("e"):
        # rape: raped, raping; the p before the ending may not double (rapped, rapping).
        yield word + "d", len(word) - 2
        yield word[:-1] + "ing", len(word) - 2
        if word.endswith(("ee", "oe", "ye")):
            yield word + "ing", None
        return
    if len(word) > 2 and word[-1] == "y" and word[-2] not in _VOWELS:
        yield word[:-1] + "ies", None
        yield word[:-1] + "ied", None
    stems = [word]
    if _ends_consonant_vowel_consonant(word):
        # rap, rapping: a word of one syllable doubles its last letter; a longer
        # one may or may not (visiting, committing).
        syllables = len(re.findall(r"[aeiouy]+", word))
        stems = [word + word[-1]] if syllables == 1 else [word, word + word[-1]]
    for stem in stems:
        yield stem + "ed", None
        yield stem + "ing", None


def _ends_consonant_vowel_consonant(word: str) -> bool:
    if len(word) < 3 or word[-1] in _VOWELS | {"w", "x"}:
        return False
    return word[-2] in _VOWELS and word[-3] not in _VOWELS


def _forms(term: str) -> Iterator[tuple[str, _Form]]:
    """The squeezed keys a configured term is found under, with what each demands."""
    words = [_spellings(word)[0] for word in _WORD.findall(_readings(term)[0])]
    if not words:
        return
    for spelled, letter in _endings("".join(words)):
        runs = _runs(spelled)
        not_twice = None if letter is None else len(_runs(spelled[: letter + 1])) - 1
        yield _squeezed(spelled), _Form(term, tuple(runs), len(words), not_twice)


class _Prompt:
    """One reading of a prompt: its words, what each may spell, and what lies between."""

    def __init__(self, reading: str) -> None:
        reading = _SAME_LETTER_WORDS.sub(lambda run: _NOT_LETTERS.sub("", run[0]), reading)
        parts = _WORD.split(reading)
        self.words, self._between = parts[1::2], parts[2:-1:2]
        keys = _WORD.findall(_squeezed(reading))  # squeezing never joins two words
        if not (reading.isascii() and "1" not in reading):
            keys = [key if key.isascii() and "1" not in key else None for key in keys]
        # A word's squeezed letters; None for one with letters of several readings.
        self.keys: list[str | None] = keys
        self._spellings: dict[int, list[tuple[str, str]]] = {}

    def spellings(self, index: int) -> list[tuple[str, str]]:
        """(squeezed key, letters) for each way to read word `index`."""
        key = self.keys[index]
        if key is not None:
            return [(key, self.words[index])]
        if index not in self._spellings:
            self._spellings[index] = [(_squeezed(s), s) for s in _spellings(self.words[index])]
        return self._spellings[index]

    def single(self, index: int) -> bool:
        """A single letter, maybe repeated (a, ooo)."""
        word = self.words[index]
        return word.count(word[0]) == len(word)

    def gap(self, index: int) -> int | None:
        """What parts word `index` from the next: 0 if they may be pieces of one word
        (n u d e, nu.de), 1 for a space between the words of a phrase, None otherwise."""
        between = self._between[index]
        if not between.strip(_JOINERS) or (self.single(index) and self.single(index + 1)):
            return 0
        return 1 if not between.strip(_JOINERS + " ") else None


class Blocklist:
    """A guild's blocked terms, compiled once; `find` checks one prompt against them all."""

    def __init__(self, terms: tuple[str, ...]) -> None:
        self._forms: dict[str, list[_Form]] = {}
        for term in terms:
            for key, form in _forms(term):
                self._forms.setdefault(key, []).append(form)
        # Every start of a key: a run of words that is none can stop growing.
        self._prefixes = {key[:end] for key in self._forms for end in range(1, len(key) + 1)}
        self._gaps = max((f.words - 1 for fs in self._forms.values() for f in fs), default=0)

    def find(self, text: str) -> str | None:
        """The blocked term `text` contains, as configured, or None."""
        if not self._forms:
            return None
        prefixes = self._prefixes
        for reading in _readings(text):
            prompt = _Prompt(reading)
            for start, key in enumerate(prompt.keys):
                if key is not None and key not in prefixes:
                    continue  # most words: no term starts so, kept cheap
                found = self._found_from(prompt, start)
                if found is not None:
                    return found
        return None

    def _found_from(self, prompt: _Prompt, start: int) -> str | None:
        """The term spelled by a run of whole words from word `start`, if any.

        Whole words only, so a term inside a word (gorgeous) never is one.
        """
        prefixes, forms, words = self._prefixes, self._forms, prompt.words
        states = [(key, letters) for key, letters in prompt.spellings(start) if key in prefixes]
        end, gaps = start, 0
        while states:
            for key, letters in states:
                for form in forms.get(key, ()):
                    if gaps < form.words and form.fits(_runs(letters)):
                        return form.term
            end += 1
            if end == len(words):
                return None
            gap = prompt.gap(end - 1)
            if gap is None or gaps + gap > self._gaps:
                return None
            gaps += gap
            grown = (
                (key + more[1:] if key[-1] == more[0] else key + more, letters + extra)
                for key, letters in states
                for more, extra in prompt.spellings(end)
            )
            states = [state for state in grown if state[0] in prefixes][:_MAX_SPELLINGS]
        return None


@lru_cache(maxsize=64)
def compiled(terms: tuple[str, ...]) -> Blocklist:
    """The Blocklist of `terms`, built once per distinct list (a guild's changes rarely)."""
    return Blocklist(terms)


def blocked_term(text: str, terms: list[str]) -> str | None:
    """The blocked term `text` contains, however disguised, as configured; None if none."""
    return compiled(tuple(terms)).find(text)
