"""Exceptions with messages meant to be shown to a user as one line."""


class MobileFaceError(Exception):
    """Base class: every error the library raises on purpose."""


class ModelError(MobileFaceError):
    """A model file is missing, corrupt or cannot be loaded."""


class ImageError(MobileFaceError, ValueError):
    """An image cannot be read or is not a usable picture."""


class DataError(MobileFaceError, ValueError):
    """A data set (folder of images, pairs file) is missing or malformed."""


class StageError(MobileFaceError):
    """A stage failed on a frame (its model crashed, say); the message names the stage."""
