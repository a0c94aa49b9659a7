"""Configs: the YAML loader with key=value overrides, the typed schemas of train and SFT runs, `mmrl config show`."""
