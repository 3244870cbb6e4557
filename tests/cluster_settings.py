"""Settings of the multi-process tests (``tests/test_cluster.py``): servers run no worker of their
own; dedicated ``manage.py reactive_worker`` processes hold the lease, as in production."""

from tests.settings import *  # noqa: F403
from tests.settings import REACTIVE

REACTIVE = {**REACTIVE, "RUN_WORKER_IN_SERVER": False}
