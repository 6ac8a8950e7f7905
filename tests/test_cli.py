"""The detkit command line: help and version."""

from click.testing import CliRunner

from detkit import __version__
from detkit.cli import main


def test_help_reads_like_a_manual():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "train, evaluate and compare object detectors" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
