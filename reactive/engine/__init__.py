"""Stage 3, change records -> new results: query instances, running functions, the invalidator
(the one ordering point) and the worker that holds it."""
