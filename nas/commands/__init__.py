"""One module per ``nas`` verb, each owning its arguments (``add_parsers``) and its body (``main``).

``nas.cli`` builds the parser from :data:`COMMANDS` in this order (the README's
command table). A command module imports the engine inside ``main``, so
``nas --help`` answers without loading torch; nothing in the engine imports a
command module. :mod:`nas.commands.checks` holds every check a command makes
before it writes anything.
"""

from nas.commands import config, dashboard, finetune, latency, profile, rank, report, run, spaces

COMMANDS = (run, profile, finetune, report, dashboard, rank, latency, spaces, config)
"""Command modules, in the order ``nas --help`` lists them (each one's ``TABLE`` rows: the README's command
table)."""
