"""The `dcmp` command line (Typer + rich). Nothing below this package imports either."""
