"""Display-id prefixes, with the examples of the contract."""

import pytest

from syncd.server.prefix import parse_display_id, project_prefix


@pytest.mark.parametrize("project, prefix", [
    ("my-ml-project", "MMP"), ("training", "TRA"), ("image-classification", "ICL"),
    ("resnet-50", "R50"), ("a", "A"), ("my project name", "MPN"),
    ("a_b.c-d e", "ABCD"), ("one-two-three-four-five", "OTTF"), ("--", "RUN"), ("", "RUN"),
])
def test_prefix_examples(project, prefix):
    assert project_prefix(project) == prefix


@pytest.mark.parametrize("text, parsed", [
    ("MMP-42", ("MMP", 42)), ("mmp-1", ("MMP", 1)), ("R50-7", ("R50", 7)),
    ("MMP42", None), ("MMP-x", None), ("-3", None), ("M_P-3", None),
])
def test_parse_display_id(text, parsed):
    assert parse_display_id(text) == parsed
