"""One module per subcommand; each exposes a click command named `command`."""

# Subcommand name -> module in this package, imported only when that subcommand runs, so printenv never pays for the
# download or ELF layers. Here, not in cli/main.py, so that the legacy translation can list them without importing
# the command line it feeds.
SUBCOMMANDS = {
    "printenv": "printenv",
    "download": "download",
    "install": "install",
    "build": "build",
    "publish": "publish",
    "inspect": "inspect",
    "status": "status",
    "cleanup": "cleanup",
    "doctor": "doctor",
}
