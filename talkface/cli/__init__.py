"""The ``talkface`` command line: one module per command group that parses, validates, delegates and reports."""

from talkface.cli.main import app, main

__all__ = ["app", "main"]
