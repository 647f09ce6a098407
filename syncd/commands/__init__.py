"""plutosync sub-commands, one module each."""
