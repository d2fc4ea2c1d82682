"""The one exception of the ``data_scripts/prepare_*.py`` scripts.

Every helper module here raises ``PrepareError`` (one line, no traceback) for bad input; ``_cli.run_prepare``
turns it into ``prepare_<name>: error: <message>`` on stderr and exit status 2. All reading and checking
happens before ``_writing.write_atomically`` is called, so bad input never leaves a file behind.

The scripts are run as files (``python data_scripts/prepare_yahoo.py ...``), so Python puts this folder
first on ``sys.path`` and they import it as a top-level module. Only the standard library is used.
"""


class PrepareError(Exception):
    """Bad input, stated in one line."""
