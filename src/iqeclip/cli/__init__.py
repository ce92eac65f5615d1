"""The ``iqeclip`` command: the command table (main) and the dataclass-to-argparse layer (options).

Nothing in the package imports it."""
