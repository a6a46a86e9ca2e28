"""``python -m server.cli`` runs the ``lungcds`` command line."""

from server.cli.main import main

main()
