"""`python -m dcmp_cli` runs the command-line tool."""

from dcmp_cli.cli.app import main

if __name__ == "__main__":
    main()
