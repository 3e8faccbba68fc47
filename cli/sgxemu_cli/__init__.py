"""The ``sgxemu`` command: the composition root, the only code that imports all four components."""
