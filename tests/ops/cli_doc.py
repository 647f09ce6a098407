"""Keep docs/cli.md's ``--help`` blocks equal to the real ``plutosync`` help.

    python -m tests.ops.cli_doc          # rewrite the blocks in docs/cli.md
    python -m tests.ops.cli_doc --check  # exit 1 when they differ (the test does this)

Each sub-command's help sits between ``<!-- BEGIN help NAME -->`` and ``<!-- END help NAME -->``;
the prose around the blocks is kept. A sub-command without a block gets a new section before
``<!-- END commands -->``. Help is rendered 100 columns wide with HOME=/home/you, so the file
does not depend on who generated it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"
END_COMMANDS = "<!-- END commands -->"

_DUMP = """
import json
from syncd.cli import build_parser
p = build_parser()
sub = next(a for a in p._actions if a.dest == "command")
out = {"": p.format_help()}
out.update({name: sp.format_help() for name, sp in sub.choices.items()})
print(json.dumps(out))
"""


def live_help() -> dict[str, str]:
    """``{"": top-level help, "run": ..., ...}`` in the CLI's own order."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO", "XDG_"))}
    env.update(COLUMNS="100", HOME="/home/you")
    out = subprocess.run([sys.executable, "-c", _DUMP], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout
    return json.loads(out)


def _block(name: str, text: str) -> str:
    label = name or "plutosync"
    return f"<!-- BEGIN help {label} -->\n```text\n{text.rstrip()}\n```\n<!-- END help {label} -->"


def render(doc: str, helps: dict[str, str]) -> str:
    for name, text in helps.items():
        label = name or "plutosync"
        pattern = re.compile(
            rf"<!-- BEGIN help {re.escape(label)} -->.*?<!-- END help {re.escape(label)} -->",
            re.S,
        )
        if pattern.search(doc):
            doc = pattern.sub(lambda _m, n=name, t=text: _block(n, t), doc)
        else:
            section = f"## plutosync {label}\n\n{_block(name, text)}\n\n"
            doc = doc.replace(END_COMMANDS, section + END_COMMANDS)
    return doc


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    new = render(doc, live_help())
    if "--check" in argv:
        if new != doc:
            print("docs/cli.md is out of date with plutosync --help: "
                  "run `python -m tests.ops.cli_doc` and commit the result", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
