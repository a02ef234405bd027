"""The native runtime: the stack as child processes, without Docker and without root."""
