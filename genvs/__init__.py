"""genvs: rebuild GeNVS from its parts."""
