"""Defaults and choices the command line shows before any heavy module is loaded: `gpuroof --help`
and every command's parser are built from these alone (no numpy, pandas, pydantic or matplotlib),
and the modules that use them import them from here."""

#: Where run directories go unless --results-dir says otherwise (results.results_dir).
RESULTS_ENV = "GPUROOF_RESULTS"
#: `gpuroof check`: changes within this fraction are SAME.
CHECK_TOLERANCE = 0.05
#: `gpuroof compare`: output formats, the terminal table's width, and how far under its group's
#: median a run's ceiling must fall to be flagged.
COMPARE_FORMATS = ("table", "markdown", "csv", "json")
TERMINAL_WIDTH = 120
SICK_THRESHOLD = 0.10
#: `gpuroof profile`: timed repetitions of the model.
PROFILE_REPS = 5
#: `gpuroof plot`: the figures of a run.
FIGURES = ("roofline", "losttime", "sweep", "telemetry", "hierarchy")
