"""Configuration files: the wg-quick format, with simpletun's own keys (:mod:`.wgconf`)."""
