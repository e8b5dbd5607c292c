"""experiments/README.md's table of a spec's fields is the one the spec models generate."""

from pathlib import Path

from symattn.sweep.spec_reference import BEGIN, END, reference

README = Path(__file__).resolve().parents[1] / "experiments" / "README.md"


def test_the_readme_holds_the_generated_reference():
    text = README.read_text()
    held = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip("\n")
    assert held == reference().strip("\n"), "regenerate it: python -m symattn.sweep.spec_reference"


def test_every_field_of_every_block_is_described():
    rows = [line.strip("|").split(" | ") for line in reference().splitlines()[2:]]
    assert len(rows) > 30 and all(len(row) == 4 and row[3].strip() for row in rows)
    assert "| `analysis.secondary[].step` | int | required |" in reference()
