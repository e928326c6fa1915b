"""Federation scenarios: YAML files and the runner that starts every SP as its own process."""
