"""Stage 1, ORM -> change records: what a query read (``readsets``, ``tracking``) and what a
commit wrote (``commits``), seen through the patches of Django's internals (``patches``)."""
