"""The command line: argument types (:mod:`.args`), study settings from TOML and flags
(:mod:`.settings`), progress bars (:mod:`.progress`), and one module per command.

Commands import the library; nothing in the library imports this package.
"""
