"""The prompt blocklist: finds a blocked term however a prompt disguises it.

Prompt and terms are folded alike to lowercase Latin letters before they are
compared: compatibility forms undone (NFKD, NFKC's mapping with diacritics
split off to be dropped: fullwidth, circled, math letters), zero-width and
format characters dropped, Cyrillic and Greek look-alikes read as the Latin
letter they imitate, leetspeak read as letters. A second reading takes signs
for the letters they draw: `|)` D, `()` O, `/\\` A, `|<` K, `><` X, `€` E, `!`
and `|` I or L. A term then matches a run of the prompt's words, whole words
only, with letters repeated at will, one more space inside a word, and a
plural ending: `g o r e`, `gor e`, `g0re`, `g.o.r.e`, `gorë`, `gоre` (Cyrillic
о), `g()r€`, `goooore` and `gores` are all `gore`, while gorgeous, Gorey, a
gorge and a bull that gored are not: other endings make other words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from anyascii import anyascii
from confusable_homoglyphs import confusables

# A word whose letters may each stand for several (1 is i or l, Cyrillic р looks
# like p but is spelled r) is tried in at most this many spellings that start a term.
_MAX_SPELLINGS = 128
_LEET = str.maketrans(
    {"0": "o", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s", "7": "t"}
    | dict.fromkeys("2689", " ")
)
_ONE = ("i", "l")
# Five digits or more (repeats aside: g000re) are a number, such as a seed, not leetspeak.
_DIGITS = re.compile(r"[0-9]{5,}")
# Signs read as letters, in a second reading of the prompt (the first reads them as
# separators: n|u|d|e, (nude:1.2)). Letters drawn with signs, after their readings:
# some read several ways, |3 as B or a bar (I or L) and an E (bodies: |3od|3s), |)
# as D or a bar and a bracket ((kill|)), |> as D, P or a bar and a bracket.
_DRAWINGS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("a",): ("/-\\", "/\\"),
    ("b", "ie", "le", "e"): ("|3",),
    ("d",): ("[)",),
    ("d", "i", "l", ""): ("|)", "|]"),
    ("d", "p", "i", "l", ""): ("|>",),
    ("h",): ("|-|", "]-[", "}{"),
    ("k",): ("|<", "|{"),
    ("l",): ("|_",),
    ("m",): ("|\\/|", "/\\/\\", "|v|"),
    ("n",): ("|\\|", "/\\/"),
    ("o",): ("()", "[]", "<>", "{}"),
    ("p",): ("|*",),
    ("r",): ("|2",),
    ("u", "li", "ll", "l"): ("|_|",),
    ("u",): ("(_)",),
    ("v",): ("\\/",),
    ("w",): ("\\/\\/", "\\^/"),
    ("x",): ("><",),
    ("y",): ("`/",),
}
# A run of bars (! or |) by a letter: as many I or L (k!ll, ki||, k!|l), or
# punctuation (gore!!!). Runs longer than this read as this long.
_LONGEST_BARS = 8
_BAR_READINGS = [("i" * n, "l" * n, "i" + "l" * (n - 1), "") for n in range(1, _LONGEST_BARS + 1)]
# An opening bracket before a letter: a C, or a bracket (nude:1.2).
_C_READINGS = ("c", "")
# Each reading of several is written as a private use character, whose readings
# `_Latin.choices` keeps (the folding reads the prompt's own as separators).
_SEVERAL = {
    chr(0xE000 + n): readings
    for n, readings in enumerate(
        [r for r in _DRAWINGS if len(r) > 1] + _BAR_READINGS + [_C_READINGS]
    )
}
_WRITTEN = {readings: char for char, readings in _SEVERAL.items()}
_DRAWN_LETTERS = {
    drawing: _WRITTEN.get(readings, readings[0])
    for readings, drawings in _DRAWINGS.items()
    for drawing in drawings
}


def _drawing(drawing: str) -> str:
    """A pattern for `drawing`, which yields its last sign to an O drawn with
    brackets after it: |<> is | and <>, an I and an O, not |< and >."""
    brackets = _DRAWINGS[("o",)]
    following = [o[1:] for o in brackets if o[0] == drawing[-1] and o != drawing]
    return re.escape(drawing) + "".join(f"(?!{re.escape(rest)})" for rest in following)


_DRAWN = re.compile("|".join(map(_drawing, sorted(_DRAWN_LETTERS, key=len, reverse=True))))
_IN_WORD = "a-z0-9@$\x80-\U0010ffff"
# Signs that join the letters of one disguised word (n.u.d.e, nu-de); white
# space and other punctuation part words, except between single letters.
_JOINERS = ".-_*~+/\\|'`^=#%&"
# A bar stands by a letter, or apart as letters spaced out are (n.|.c.e, k ! l l).
_BY_BAR = _IN_WORD + re.escape(_JOINERS.replace("|", "")) + r"\s"
_BARS = re.compile(rf"(?<=[{_BY_BAR}])[!|]+|[!|]+(?=[{_BY_BAR}])")
_CS = re.compile(rf"[(<\[{{](?=[{_IN_WORD}{re.escape(_JOINERS)}])")  # (orpse, (.o.c.k
_TS = re.compile(rf"(?<=[{_BY_BAR}])\+|\+(?=[{_BY_BAR}])")  # r+pe, t . o . + . a . l
_DIGIT_LETTERS = str.maketrans({"8": "b", "6": "g", "9": "g"})
# Signs written for a letter that Unicode spells otherwise (€ is EUR); £ is L or E.
_SIGN_LETTERS: dict[str, str | tuple[str, ...]] = {
    "€": "e",
    "£": ("l", "e"),
    "©": "c",
    "®": "r",
    "×": "x",
    "¡": "i",
    "†": "t",
    "∆": "a",
}
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
_VOWELS = frozenset("aeiouy")


class _Latin(dict[int, str]):
    """A str.translate table from any character to lowercase Latin, filled on first sight.

    A letter that may stand for several Latin ones is left as it is, and its
    readings are kept in `choices`, most likely first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.choices: dict[str, tuple[str, ...]] = {"1": _ONE} | _SEVERAL

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
    if char in _SIGN_LETTERS:
        return _SIGN_LETTERS[char]
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

    A second reading when signs stand by letters: read as the letters they draw
    (k!ll, ki||, |<ill, n/\\ked, 8oob), where the first reads them as separators
    (n|u|d|e, (nude:1.2)).
    """
    latin = unicodedata.normalize("NFKD", text).translate(_LATIN)
    latin = _DIGITS.sub(lambda digits: " " if len(_squeezed(digits[0])) >= 5 else digits[0], latin)
    readings = (latin, _drawn(latin))
    return list(dict.fromkeys(reading.translate(_LEET) for reading in readings))


def _drawn(latin: str) -> str:
    """`latin` with letters drawn with signs read as letters."""
    drawn = _DRAWN.sub(lambda signs: _DRAWN_LETTERS[signs[0]], latin)
    drawn = _BARS.sub(
        lambda bars: _WRITTEN[_BAR_READINGS[min(len(bars[0]), _LONGEST_BARS) - 1]], drawn
    )
    drawn = _TS.sub("t", _CS.sub(_WRITTEN[_C_READINGS], drawn))
    return drawn.translate(_DIGIT_LETTERS)


def _first_spelling(word: str) -> str:
    """A folded word with each letter of several readings read its likeliest way."""
    return "".join(_LATIN.choices.get(char, (char,))[0] for char in word)


def _joined(key: str, more: str) -> str:
    """Squeezed `key` and `more`, squeezed together."""
    return key + more[1:] if key and more and key[-1] == more[0] else key + more


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
    """`word` and its plurals, each with its letter that may not be written twice, as
    an index in the spelling. No other ending: gored, killing or hanging may mean
    something else than the blocked word (a bull gored, a killing on the market,
    hanging plants), so an admin who means them lists them too."""
    yield word, None
    yield word + "s", None
    if word.endswith(("s", "x", "z", "ch", "sh")):
        # ass: asses, whose last s may not double (assess).
        yield word + "es", len(word) + 1
    if len(word) > 2 and word[-1] == "y" and word[-2] not in _VOWELS:
        yield word[:-1] + "ies", None


def _forms(term: str) -> Iterator[tuple[str, _Form]]:
    """The squeezed keys a configured term is found under, with what each demands."""
    words = [_first_spelling(word) for word in _WORD.findall(_readings(term)[0])]
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

    def alone(self, start: int, end: int) -> bool:
        """Words `start` to `end` stand apart from their neighbours: a word split by
        a space (gor e) must be whole, or go re-enter would be gore."""
        between = self._between
        glued_before = start > 0 and not between[start - 1].strip(_JOINERS)
        return not glued_before and not (end < len(between) and not between[end].strip(_JOINERS))


class Blocklist:
    """A guild's blocked terms, compiled once; `find` checks one prompt against them all."""

    def __init__(self, terms: tuple[str, ...]) -> None:
        self._forms: dict[str, list[_Form]] = {}
        for term in terms:
            for key, form in _forms(term):
                self._forms.setdefault(key, []).append(form)
        # Every start of a key: a run of words that is none can stop growing.
        self._prefixes = {key[:end] for key in self._forms for end in range(1, len(key) + 1)}
        # Runs this long are as long as any: more than any form needs, and more than two.
        needs = (need for fs in self._forms.values() for f in fs for need in f.least)
        self._longest_run = max([3, *(need + 1 for need in needs)])
        # A phrase's words part by spaces, and one more space may split a word (gor e).
        self._gaps = max((f.words for fs in self._forms.values() for f in fs), default=0)

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
        forms, words = self._forms, prompt.words
        states = self._grown([("", "")], prompt, start)
        end, gaps = start, 0
        while states:
            for key, letters in states:
                for form in forms.get(key, ()):
                    split = gaps == form.words  # one space more than the phrase has
                    if (
                        gaps <= form.words
                        and form.fits(_runs(letters))
                        and (not split or prompt.alone(start, end))
                    ):
                        return form.term
            end += 1
            if end == len(words):
                return None
            gap = prompt.gap(end - 1)
            if gap is None or gaps + gap > self._gaps:
                return None
            gaps += gap
            states = self._grown(states, prompt, end)
        return None

    def _grown(
        self, states: list[tuple[str, str]], prompt: _Prompt, index: int
    ) -> list[tuple[str, str]]:
        """(squeezed key, letters) for each way to read `states` followed by word
        `index` that starts a term's key.

        A word with letters of several readings is read one letter at a time, and
        a reading that starts no key is dropped at once, so that the readings
        kept stay few however many a word could have.
        """
        prefixes, word, key = self._prefixes, prompt.words[index], prompt.keys[index]
        if key is not None:
            grown = ((_joined(k, key), letters + word) for k, letters in states)
            return [state for state in grown if state[0] in prefixes]
        for char in word:
            options = _LATIN.choices.get(char, (char,))
            grown = (
                (_joined(k, _squeezed(option)), self._added(letters, option))
                for k, letters in states
                for option in options
            )
            states = list(dict.fromkeys(s for s in grown if not s[0] or s[0] in prefixes))
            states = states[:_MAX_SPELLINGS]
        return [state for state in states if state[0]]

    def _added(self, letters: str, more: str) -> str:
        """`letters` and `more`, each run cut to the longest a form needs to tell
        apart (a word of 100 000 р is read in linear time)."""
        longest = self._longest_run
        for letter in more:
            if not letters.endswith(letter * longest):
                letters += letter
        return letters


@lru_cache(maxsize=64)
def compiled(terms: tuple[str, ...]) -> Blocklist:
    """The Blocklist of `terms`, built once per distinct list (a guild's changes rarely)."""
    return Blocklist(terms)


def blocked_term(text: str, terms: list[str]) -> str | None:
    """The blocked term `text` contains, however disguised, as configured; None if none."""
    return compiled(tuple(terms)).find(text)
