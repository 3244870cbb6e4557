"""The djangochannelsrestframework baseline: its documented pattern for a live value.

``consumers.py``: an ``AsyncAPIConsumer`` with a ``@model_observer`` on ``benchapp.Counter``,
one group per counter key (``groups_for_signal`` / ``groups_for_consumer``) and an action to
subscribe to a key; ``asgi.py``: the ASGI application that routes ``/dcrf/ws/`` to it, served with
``bench.settings_plain`` (no ``reactive``) and Channels' in-memory layer.
"""
