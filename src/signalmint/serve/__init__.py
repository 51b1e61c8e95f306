"""Running signalmint: the processes (web, engine, worker) and the wiring between the stages that
must not import each other (the engine's on-commit fan-out, the watchdog's operator alerts).

Importing this package imports none of its modules: a process imports the code of the roles it
runs only (start-up time); import each name from its module.
"""
