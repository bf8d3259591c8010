"""``nas spaces``: the search spaces and supernet kinds, with their sizes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    ("spaces", "list search spaces and supernet kinds", "nas spaces"),
)


def add_parsers(sub: Any) -> None:
    sp = sub.add_parser("spaces", help="list the search spaces and their sizes")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler=main)


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    from search_spaces import create_space, list_spaces, list_supernet_kinds

    as_json = args.json
    rows = []
    for name, doc in list_spaces().items():
        space = create_space(name)
        rows.append(
            {
                "name": name,
                "num_architectures": space.num_architectures(),
                "num_choices": len(space.keys),
                "description": doc,
            }
        )
    kinds = [{"supernet": k, "description": d} for k, d in list_supernet_kinds().items()]
    if as_json:
        print(json.dumps({"spaces": rows, "supernet_kinds": kinds}))
    else:
        print(f"{'space':<14} {'architectures':>14} {'choices':>8}  description")
        for r in rows:
            print(
                f"{r['name']:<14} {r['num_architectures']:>14.3g} {r['num_choices']:>8}  {r['description']}"
            )
        print(f"\n{'supernet kind (--supernet)':<28} description")
        for k in kinds:
            print(f"{k['supernet']:<28} {k['description']}")
    return 0
