"""docs/cli.md matches the real --help; docs/deploy.md's recipes name real commands and options."""

from __future__ import annotations

import re
import shlex
import subprocess

from tests.ops import cli_doc

DEPLOY = cli_doc.ROOT / "docs" / "deploy.md"


def test_cli_reference_is_the_real_help() -> None:
    helps = cli_doc.live_help()
    doc = cli_doc.DOC.read_text()
    assert cli_doc.render(doc, helps) == doc, (
        "docs/cli.md is out of date with plutosync --help: run `python -m tests.ops.cli_doc`"
    )
    for name in helps:
        assert f"<!-- BEGIN help {name or 'plutosync'} -->" in doc


def _commands(text: str) -> list[list[str]]:
    """Every ``plutosync SUBCOMMAND ...`` invocation in the text, split into words."""
    out = []
    for m in re.finditer(r"plutosync (run|status|export|prune|push|serve)\b([^\n`;|&)\"]*)", text):
        out.append([m.group(1), *shlex.split(m.group(2).replace("\\", ""), comments=True)])
    return out


def test_deploy_recipes_use_real_options() -> None:
    helps = cli_doc.live_help()
    text = DEPLOY.read_text()
    seen = set()
    for words in _commands(text):
        name = words[0]
        if name not in helps:
            continue  # a command still to come (push) is checked once it exists
        seen.add(name)
        for word in words[1:]:
            if word.startswith("--"):
                assert re.search(rf"\s{re.escape(word)}\b", helps[name]), (
                    f"deploy.md uses `plutosync {name} {word}`, which {name} --help does not list"
                )
    assert {"run", "status", "export", "prune"} <= seen


def test_slurm_script_parses() -> None:
    script = re.search(r"```bash\n(#!/bin/bash\n.*?)```", DEPLOY.read_text(), re.S).group(1)
    res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
