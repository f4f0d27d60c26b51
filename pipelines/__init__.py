"""Luigi tasks and the `strongroom` command line."""

import warnings

# Luigi warns on import that it will stop autoloading its range tasks; Strongroom uses none.
warnings.filterwarnings("ignore", message=r"\s*Autoloading range tasks", category=DeprecationWarning)
