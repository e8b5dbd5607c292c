"""Lightning's output that no user can act on, silenced once for every run (imported for its effect)."""

import logging
import warnings

# Lightning's advertisement for a hosted logger is noise in every run's output.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
# Lightning's own use of a torch API that newer torch deprecates.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
