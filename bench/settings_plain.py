"""``bench.settings`` without ``reactive``: the plain-Django baseline and the
djangochannelsrestframework server (``bench.dcrf``, Channels' in-memory layer).

The demo apps (``project.chat``, ``project.tasks``) import ``reactive`` in their functions and
are dropped too. ``bench.benchapp`` stays; its ``functions`` module is imported only by
``reactive``'s autodiscovery, so nothing imports it here.
"""

from bench.settings import *  # noqa: F403
from bench.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in ("reactive", "project.chat", "project.tasks")]

REACTIVE = {}
