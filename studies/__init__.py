"""The shipped study files (`*.toml`): `sweep studies`-style names like `quick`, `default`, `paper`, `beyond`."""
