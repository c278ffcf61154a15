"""The command line's exit codes (see the package docstring)."""
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_STOPPED, EXIT_COLLECTIVE_TIMEOUT = 0, 1, 2, 3, 4
