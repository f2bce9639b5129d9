"""File formats and safe I/O helpers: atomic writes, the restricted unpickler, mesh files."""
