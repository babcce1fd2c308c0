"""One module per `tracr` command, each with its `cmd_*` function."""
