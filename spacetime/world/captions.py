"""The caption grammar: `a red circle [moving left] [on a white background]`, and its parser."""

from __future__ import annotations

from dataclasses import dataclass

from spacetime.world.palette import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SOLIDS

ARTICLES: tuple[str, ...] = ("a", "an")
VOCABULARY: tuple[str, ...] = (
    *ARTICLES,
    *COLOURS,
    "black",
    *SHAPES,
    *SOLIDS,
    "moving",
    *DIRECTIONS,
    "on",
    "background",
)


@dataclass(frozen=True)
class SceneSpec:
    """What a 2D scene caption asks for; background None means the default dark one."""

    shape: str
    colour: str
    background: str | None = None


@dataclass(frozen=True)
class ClipSpec:
    """What a motion clip caption asks for."""

    shape: str
    colour: str
    direction: str
    background: str | None = None


@dataclass(frozen=True)
class PrimitiveSpec:
    """What a 3D primitive caption asks for."""

    shape: str
    colour: str


def article(word: str) -> str:
    """The indefinite article for the word that follows it ("an orange", "a red")."""
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(colour: str, shape: str) -> str:
    """`a red circle`, `an orange cube`."""
    return f"{article(colour)} {colour} {shape}"


def background_phrase(background: str | None) -> str:
    """` on a white background`, or nothing for the default background."""
    return "" if background is None else f" on {article(background)} {background} background"


def scene_caption(spec: SceneSpec) -> str:
    """The canonical caption of a 2D scene."""
    return noun_phrase(spec.colour, spec.shape) + background_phrase(spec.background)


def clip_caption(spec: ClipSpec) -> str:
    """The canonical caption of a motion clip."""
    phrase = noun_phrase(spec.colour, spec.shape)
    return f"{phrase} moving {spec.direction}" + background_phrase(spec.background)


def primitive_caption(spec: PrimitiveSpec) -> str:
    """The canonical caption of a 3D primitive."""
    return noun_phrase(spec.colour, spec.shape)


class _Words:
    """A cursor over a caption's words that raises errors naming the offending word."""

    def __init__(self, text: str):
        self.text = text
        self.words = text.lower().replace(".", " ").split()
        unknown = [w for w in self.words if w not in VOCABULARY]
        if unknown:
            names = ", ".join(repr(w) for w in dict.fromkeys(unknown))
            raise ValueError(
                f"unknown word(s) {names} in caption {text!r}; "
                f"the vocabulary is: {', '.join(VOCABULARY)}"
            )
        self.i = 0

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def take(self, allowed: tuple[str, ...], what: str) -> str:
        word = self.peek()
        if word not in allowed:
            got = "the end of the caption" if word is None else repr(word)
            raise ValueError(
                f"expected {what} ({', '.join(allowed)}) at word {self.i + 1} of caption "
                f"{self.text!r}, got {got}"
            )
        self.i += 1
        return word

    def skip_article(self) -> None:
        if self.peek() in ARTICLES:
            self.i += 1

    def background(self, colour: str) -> str | None:
        """An optional trailing `on a {colour} background`, which must differ from the object."""
        if self.peek() is None:
            return None
        self.take(("on",), "'on' before a background")
        self.skip_article()
        background = self.take(tuple(BACKGROUNDS), "a background colour")
        self.take(("background",), "the word")
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r} after the end of caption {self.text!r}")
        if background == colour:
            raise ValueError(
                f"caption {self.text!r} asks for a {colour} object on a {colour} background; "
                "the object colour must differ from the background"
            )
        return background


def _object(words: _Words, shapes: tuple[str, ...]) -> tuple[str, str]:
    words.skip_article()
    colour = words.take(tuple(COLOURS), "a colour")
    return colour, words.take(shapes, "a shape")


def parse_caption(text: str) -> SceneSpec:
    """Parse `a red circle [on a white background]`; ValueError names any bad word."""
    words = _Words(text)
    colour, shape = _object(words, SHAPES)
    return SceneSpec(shape, colour, words.background(colour))


def parse_clip_caption(text: str) -> ClipSpec:
    """Parse `a red circle moving left [on a white background]`; ValueError names any bad word."""
    words = _Words(text)
    colour, shape = _object(words, SHAPES)
    words.take(("moving",), "the word")
    direction = words.take(DIRECTIONS, "a direction")
    return ClipSpec(shape, colour, direction, words.background(colour))


def parse_primitive_caption(text: str) -> PrimitiveSpec:
    """Parse `a red cube`; ValueError names any bad word."""
    words = _Words(text)
    colour, shape = _object(words, SOLIDS)
    if words.peek() is not None:
        raise ValueError(f"unexpected {words.peek()!r} after the end of caption {text!r}")
    return PrimitiveSpec(shape, colour)
