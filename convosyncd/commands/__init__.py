"""One module per command-line verb; each offers ``add_parser(subparsers)``."""
