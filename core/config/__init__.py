"""The parts of the settings model, one module per concern. Plain pydantic models: no I/O, no imports
of RankLoop's other packages; ``core.settings.Settings`` composes them."""
