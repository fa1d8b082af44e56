"""The command lines: ``mobileface`` (``main``), its ``facebank`` subcommands, and the
options, logging and exit codes every script shares (``common``)."""
