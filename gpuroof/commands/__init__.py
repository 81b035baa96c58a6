"""The command layer: one module per subcommand (parse its arguments, call the domain, print)."""
