"""``python -m runbook_rag``: the same as the ``runbook-rag`` command."""

from .cli import run

if __name__ == "__main__":
    run()
