"""Where the analysis package keeps its reference data (figures go to the project: `report.default_out_dir`)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REFERENCE_DIR = PACKAGE_DIR / "reference" / "acl2024"
