"""The ``rankloop`` command (``cli.main:main``): the top layer, above flows/ and the pipeline in rankloop/."""
