"""The error hierarchy shared by every layer.

It lives in schema/ because schema/ is the bottom of the dependency graph
(app -> curation, trainer -> schema): everything can import it.
Every error a user can hit is a `SkinflowError` whose message says what to do.
"""


class SkinflowError(Exception):
    """Base class: the message is meant for the person at the keyboard."""


class CaptionError(SkinflowError):
    """A caption (or a value of one of its fields) is not valid."""


class CaptionParseError(CaptionError):
    """A text could not be read as a caption."""


class TaxonomyError(SkinflowError):
    """A taxonomy file is malformed or a diagnosis key is unknown."""
