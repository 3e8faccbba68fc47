"""``python -m sgxemu_cli``: the same as the ``sgxemu`` command."""

from sgxemu_cli.main import entry

entry()
