"""``python -m tessera_search`` runs the CLI."""

from .cli import run

run()
