"""Errors of the curation layer. All are SkinflowError: the message tells the user what to do."""

from schema.errors import SkinflowError


class ConfigError(SkinflowError):
    """Settings or the config file are wrong."""


class PermissionDenied(SkinflowError):
    """The acting user's role does not allow this action."""


class NotFound(SkinflowError):
    """A user, image, annotation ... that does not exist."""


class ConflictError(SkinflowError):
    """The data changed under the caller (e.g. an edit based on an old version)."""


class IngestError(SkinflowError):
    """An import as a whole cannot run (bad CSV header, unreadable folder ...)."""


class ImageRejected(SkinflowError):
    """One image file is not acceptable (corrupt, too large, not an image ...)."""


class FetchError(SkinflowError):
    """An image URL cannot be downloaded (refused address, timeout, too large ...)."""


class ExportError(SkinflowError):
    """An export cannot be written."""


class DatabaseError(SkinflowError):
    """The database cannot be opened or upgraded."""
