"""The generated reference pages: equal to what the code generates now, and complete."""

from dataclasses import fields

from clients.runconfig import Config
from simulation.config_doc import config_keys
from simulation.reference import PAGES, main, render


def test_the_reference_pages_are_what_the_code_generates():
    """A stale page (a key or option added, renamed or re-described without regenerating the
    docs) fails here: run `python -m simulation.reference`."""
    for name, text in render().items():
        assert PAGES[name].read_text() == text, f"{PAGES[name]} is stale: " \
            "run `python -m simulation.reference`"


def test_every_key_is_documented_once_in_its_section():
    rows = [row for _, section in config_keys() for row in section]
    assert [k for k, *_ in rows] == [f.name.replace("_", "-") for f in fields(Config)]
    undocumented = [k for k, _, _, desc in rows if not desc]
    assert not undocumented, f"keys with no comment in clients/runconfig.py: {undocumented}"
    assert len(config_keys()) >= 5  # sections from the `# == name ==` lines


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    stale.write_text("# Config keys\n\nold\n")
    monkeypatch.setitem(PAGES, "config", stale)
    monkeypatch.setitem(PAGES, "cli", tmp_path / "cli.md")
    assert main(["--check"]) == 1
    assert "stale:" in capsys.readouterr().err
    assert main([]) == 0 and main(["--check"]) == 0  # rewritten, then current


def test_the_flower_app_block_replaces_a_hand_written_one_and_keeps_the_rest():
    from simulation.flower_app_config import END, block, with_block

    hand = '[project]\nname = "x"\n\n[tool.flwr.app.config]\nmodel = "old"\n\n[tool.ruff]\nx = 1\n'
    once = with_block(hand)
    assert once == ('[project]\nname = "x"\n\n[tool.flwr.app.config]\n' + block()
                    + '\n\n[tool.ruff]\nx = 1\n')
    assert with_block(once) == once and once.count(END) == 1  # regenerating changes nothing
