"""The GRID sentence: its six slots, 51-word vocabulary, CTC tokens and the transcripts clip names spell.

No dataset or file code: the model (its CTC vocabulary size, the lip-read text) and the data pipeline both import it.
"""
from __future__ import annotations

from pathlib import Path

from naturall2s.errors import DataError

# GRID grammar: command colour preposition letter digit adverb. The letter of each word in a clip name.
_COMMANDS = {"b": "bin", "l": "lay", "p": "place", "s": "set"}
_COLOURS = {"b": "blue", "g": "green", "r": "red", "w": "white"}
_PREPOSITIONS = {"a": "at", "b": "by", "i": "in", "w": "with"}
_LETTERS = {c: c for c in "abcdefghijklmnopqrstuvxyz"}  # no w
_DIGITS = {"z": "zero", "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
           "6": "six", "7": "seven", "8": "eight", "9": "nine"}
_ADVERBS = {"a": "again", "n": "now", "p": "please", "s": "soon"}
SLOT_CODES = {"command": _COMMANDS, "colour": _COLOURS, "preposition": _PREPOSITIONS, "letter": _LETTERS,
              "digit": _DIGITS, "adverb": _ADVERBS}  # slot name -> its letter code in a clip name, in order
"""The six slots of every GRID sentence, in order, each mapping a clip-name letter to its word."""
_NAME_SLOTS = tuple(SLOT_CODES.values())
GRID_SLOTS = tuple(SLOT_CODES)  # the six words of every sentence

GRID_VOCAB: list[str] = list(dict.fromkeys(w for slot in _NAME_SLOTS for w in slot.values()))
"""The 51 GRID words. CTC token of ``GRID_VOCAB[i]`` is ``i + 1``; token 0 is the blank."""
BLANK = 0
_WORD_TO_TOKEN = {w: i + 1 for i, w in enumerate(GRID_VOCAB)}


def name_transcript(name: str) -> str:
    """The sentence a GRID clip name spells: ``"bbaf2n"`` -> ``"bin blue at f two now"`` (z = zero)."""
    stem = Path(name).stem.lower()
    if len(stem) != len(_NAME_SLOTS) or any(c not in slot for c, slot in zip(stem, _NAME_SLOTS)):
        raise DataError(f"{name!r} is not a GRID clip name (6 letters: command colour preposition letter digit adverb)")
    return " ".join(slot[c] for c, slot in zip(stem, _NAME_SLOTS))


def is_grid_sentence(text: str) -> bool:
    """Whether ``text`` is one GRID sentence: six words, each from its slot, in order."""
    words = text.lower().split()
    return len(words) == len(_NAME_SLOTS) and all(w in slot.values() for w, slot in zip(words, _NAME_SLOTS))


def text_to_tokens(text: str) -> list[int]:
    """CTC tokens (1..51) of a GRID sentence. Raises DataError on a word outside GRID_VOCAB."""
    try:
        return [_WORD_TO_TOKEN[w] for w in text.lower().split()]
    except KeyError as e:
        raise DataError(f"word {e.args[0]!r} is not in the GRID vocabulary") from None


def tokens_to_text(tokens) -> str:
    """Inverse of :func:`text_to_tokens` (a list, 1-D tensor or array of ints); blanks and out-of-range ids are
    skipped."""
    ids = tokens.tolist() if hasattr(tokens, "tolist") else tokens
    return " ".join(GRID_VOCAB[t - 1] for t in ids if 1 <= int(t) <= len(GRID_VOCAB))
