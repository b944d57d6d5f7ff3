"""The file operations engine: executes queued copies and deletions against the storages."""
