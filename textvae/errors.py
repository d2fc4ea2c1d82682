"""The one exception type a user sees: the CLI prints it as a single line and exits with status 2."""


class TextVAEError(Exception):
    """Bad input from the user (a file, a recipe, an argument, a checkpoint), stated in one line."""
