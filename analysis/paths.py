"""Where the analysis package keeps its reference data and writes figures by default."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REFERENCE_DIR = PACKAGE_DIR / "reference" / "acl2024"
FIGURES_DIR = PACKAGE_DIR / "figures"
