"""The per-face stages, after detection: ``base`` (the Stage contract and the stage loop),
``landmarks``, ``pose``, ``align``, ``quality``, ``attributes`` and ``embed``."""
