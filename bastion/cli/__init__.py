"""The `bastion` command line (click): one module per command group; `main` is in main.py."""
