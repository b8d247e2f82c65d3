"""A plugin whose module fails at import: the registry must report it and go on."""

raise ImportError("this test plugin is broken on purpose")
