"""The console scripts (``groot-sage``, ``groot_node``, ``sage_node``): the processes the package starts.

Before anything else they keep two optional packages out of the process: transformers imports
scikit-learn (assisted generation's ROC curve; eagerly up to 5.2x) and SciPy (object-detection losses) as
soon as a model class is imported, whenever they are installed, as they are on most robot images. Neither
is used here, and together they cost 1-1.5 s of every start (``docs/speed.md``). Marked absent in
``sys.modules``, transformers sees them as not installed. A package already imported is left alone, and
code that imports the package as a library (``groot_sage_ros.api``, the tests) is not affected.
"""

from __future__ import annotations

import sys

UNUSED_OPTIONAL_PACKAGES = ("sklearn", "scipy")


def keep_unused_packages_out() -> None:
    """Make ``import sklearn`` / ``import scipy`` fail in this process, unless they are already imported."""
    for name in UNUSED_OPTIONAL_PACKAGES:
        sys.modules.setdefault(name, None)


def groot_sage() -> int:
    keep_unused_packages_out()
    from .cli import main

    return main()


def groot_node() -> int:
    keep_unused_packages_out()
    from .ros.teacher_node import main

    return main()


def sage_node() -> int:
    keep_unused_packages_out()
    from .ros.student_node import main

    return main()
